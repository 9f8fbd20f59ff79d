# Summary of every device and backend under results/ (see rules/common.smk, SUMMARY_DIR).
rule summarize:
    input:
        **summary_rule_inputs(),
    output:
        # The time series is offered as Parquet in the report (its HTML page is a per-trace summary).
        tables=[
            (
                report(
                    f"{SUMMARY_DIR}/{table}.parquet",
                    category="Tables",
                    subcategory="Compression (PTQ) time and resources",
                    labels={"table": f"{table} (Parquet)"},
                    caption="../report/table_compression_resources_parquet.rst",
                )
                if table == "compression_resources"
                else f"{SUMMARY_DIR}/{table}.parquet"
            )
            for table in SUMMARY_TABLES
        ],
        # The report shows HTML versions of these (rule report_html).
        claims=f"{SUMMARY_DIR}/claims.md",
    message:
        "Summarizing every device's and backend's results into results/summary tables"
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


# The study's figures 5-12 apart from the ones this workflow adds.
FIGURE_SUBCATEGORY = {
    figure: ("Beyond the study (INT8 trade-off, Pareto front)" if figure in ("fig13_int8_tradeoff", "fig14_pareto")
             else "The study's figures (Fig. 5-12)")
    for figure in FIGURES
}


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
                    subcategory=FIGURE_SUBCATEGORY[figure],
                    labels={"figure": figure},
                    caption=f"../report/{figure}.rst",
                )
                if fmt == "png"
                else f"{SUMMARY_DIR}/figures/{figure}.{fmt}"
            )
            for figure in FIGURES
            for fmt in FIGURE_FORMATS
        ],
    message:
        "Plotting the summary figures (PNG and SVG)"
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
