rule summarize:
    input:
        **summary_inputs(),
    output:
        tables=[
            report(f"{SUMMARY_DIR}/{table}.parquet", category="Tables", caption="../report/tables.rst")
            for table in SUMMARY_TABLES
        ],
    params:
        out_dir=folder_of_first_output,
        inputs=summary_inputs(),
    log:
        f"{LOGS}/summarize/{DEVICE}/{BACKEND}.log",
    conda:
        "../envs/plots.yaml"
    script:
        "../workflow_scripts/shims/summarize.py"


rule plot_figures:
    input:
        tables=rules.summarize.output.tables,
    output:
        figures=[
            report(
                f"{SUMMARY_DIR}/figures/{figure}.png",
                category="Figures",
                caption=f"../report/{figure}.rst",
            )
            for figure in FIGURES
        ],
    params:
        summary_dir=summary_dir_of_tables,
    log:
        f"{LOGS}/plot_figures/{DEVICE}/{BACKEND}.log",
    conda:
        "../envs/plots.yaml"
    script:
        "../workflow_scripts/shims/plot_figures.py"
