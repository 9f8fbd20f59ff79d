# Summary of every device and backend under results/ (see rules/common.smk, SUMMARY_DIR).
rule summarize:
    input:
        **summary_rule_inputs(),
    output:
        tables=[
            report(f"{SUMMARY_DIR}/{table}.parquet", category="Tables", caption="../report/tables.rst")
            for table in SUMMARY_TABLES
        ],
        claims=report(f"{SUMMARY_DIR}/claims.md", category="Claims", caption="../report/claims.rst"),
    params:
        out_dir=folder_of_first_output,
        inputs=summary_params(),
        # Rows of different comparable settings fail the job unless this is true (summarize.check_settings).
        allow_mixed_configs=config["summary"]["allow_mixed_configs"],
    resources:
        mem_mb=config["resources"]["summarize"]["mem_mb"],
        runtime=config["resources"]["summarize"]["runtime"],
    log:
        f"{LOGS}/summarize/summary.log",
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
                f"{SUMMARY_DIR}/figures/{figure}.{fmt}",
                category="Figures",
                subcategory=fmt.upper(),
                caption=f"../report/{figure}.rst",
            )
            for figure in FIGURES
            for fmt in FIGURE_FORMATS
        ],
    params:
        summary_dir=summary_dir_of_tables,
    resources:
        mem_mb=config["resources"]["plot_figures"]["mem_mb"],
        runtime=config["resources"]["plot_figures"]["runtime"],
    log:
        f"{LOGS}/plot_figures/figures.log",
    conda:
        "../envs/plots.yaml"
    script:
        "../workflow_scripts/shims/plot_figures.py"
