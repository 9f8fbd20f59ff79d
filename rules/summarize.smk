# Summary of every device and backend under results/ (see rules/common.smk, SUMMARY_DIR).
rule summarize:
    input:
        **summary_rule_inputs(),
    output:
        tables=[f"{SUMMARY_DIR}/{table}.parquet" for table in SUMMARY_TABLES],
        # The report shows HTML versions of these (rule report_html).
        claims=f"{SUMMARY_DIR}/claims.md",
    params:
        out_dir=folder_of_first_output,
        inputs=summary_params(),
        # Rows of different comparable settings fail the job unless this is true (summarize.check_settings).
        allow_mixed_configs=config["summary"]["allow_mixed_configs"],
    resources:
        mem_mb=config["resources"]["summarize"]["mem_mb"],
        runtime=config["resources"]["summarize"]["runtime"],
        **placement("summarize"),
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
        # One report entry per figure (PNG, with its caption); the SVG is written beside it.
        figures=[
            (
                report(
                    f"{SUMMARY_DIR}/figures/{figure}.{fmt}",
                    category="Figures",
                    labels={"figure": figure},
                    caption=f"../report/{figure}.rst",
                )
                if fmt == "png"
                else f"{SUMMARY_DIR}/figures/{figure}.{fmt}"
            )
            for figure in FIGURES
            for fmt in FIGURE_FORMATS
        ],
    params:
        summary_dir=summary_dir_of_tables,
    resources:
        mem_mb=config["resources"]["plot_figures"]["mem_mb"],
        runtime=config["resources"]["plot_figures"]["runtime"],
        **placement("plot_figures"),
    log:
        f"{LOGS}/plot_figures/figures.log",
    conda:
        "../envs/plots.yaml"
    script:
        "../workflow_scripts/shims/plot_figures.py"
