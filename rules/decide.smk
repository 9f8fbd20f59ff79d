# The deployment decision, the end-of-run summary, and HTML pages of the summary for the report.
# Included by the Snakefile after rules/summarize.smk; budgets come from config block `decision`
# (config/schema.yaml). The Snakefile's onsuccess handler prints summary.md.

DECISION = config["decision"]
REPORT_HTML_DIR = f"{SUMMARY_DIR}/html"
REPORT_TABLES = SUMMARY_TABLES + ["decision"]
REPORT_PAGES = ["decision", "claims", "summary"]
DECIDE_TARGETS = (
    [f"{SUMMARY_DIR}/decision.md", f"{SUMMARY_DIR}/decision.parquet", f"{SUMMARY_DIR}/summary.md"]
    + [f"{REPORT_HTML_DIR}/{name}.html" for name in REPORT_TABLES]
    + [f"{REPORT_HTML_DIR}/{name}_md.html" for name in REPORT_PAGES]
    + [f"{REPORT_HTML_DIR}/figures.html"]
)


rule decide:
    input:
        tables=rules.summarize.output.tables,
    output:
        markdown=report(f"{SUMMARY_DIR}/decision.md", category="Decision", caption="../report/decision.rst"),
        table=f"{SUMMARY_DIR}/decision.parquet",
    params:
        summary_dir=summary_dir_of_tables,
        budgets=DECISION,
    resources:
        mem_mb=config["resources"]["decide"]["mem_mb"],
        runtime=config["resources"]["decide"]["runtime"],
        **placement("decide"),
    log:
        f"{LOGS}/decide/decision.log",
    conda:
        "../envs/plots.yaml"
    script:
        "../workflow_scripts/shims/decide.py"


rule run_summary:
    input:
        tables=rules.summarize.output.tables,
        decision=rules.decide.output.table,
    output:
        summary=report(f"{SUMMARY_DIR}/summary.md", category="Summary", caption="../report/run_summary.rst"),
    params:
        summary_dir=summary_dir_of_tables,
    resources:
        mem_mb=config["resources"]["decide"]["mem_mb"],
        runtime=config["resources"]["decide"]["runtime"],
        **placement("run_summary"),
    log:
        f"{LOGS}/run_summary/summary.log",
    conda:
        "../envs/plots.yaml"
    script:
        "../workflow_scripts/shims/run_summary.py"


rule report_html:
    input:
        tables=rules.summarize.output.tables,
        claims=rules.summarize.output.claims,
        decision_table=rules.decide.output.table,
        decision=rules.decide.output.markdown,
        summary=rules.run_summary.output.summary,
        figures=[f for f in rules.plot_figures.output.figures if f.endswith(".png")],
    output:
        tables=[
            report(f"{REPORT_HTML_DIR}/{name}.html", category="Tables", labels={"table": name},
                   caption="../report/tables.rst")
            for name in REPORT_TABLES
        ],
        pages=[
            report(f"{REPORT_HTML_DIR}/{name}_md.html", category="Summary", labels={"page": name},
                   caption=f"../report/{'run_summary' if name == 'summary' else name}.rst")
            for name in REPORT_PAGES
        ],
        gallery=report(f"{REPORT_HTML_DIR}/figures.html", category="Figures", labels={"figure": "all, with captions"},
                       caption="../report/figures.rst"),
    params:
        summary_dir=summary_dir_of_tables,
        table_names=REPORT_TABLES,
        # No path of the checkout here (a moved checkout would rerun the job): the captions are
        # read from the report/ folder beside workflow_scripts (report_html.CAPTIONS_DIR).
    resources:
        mem_mb=config["resources"]["decide"]["mem_mb"],
        runtime=config["resources"]["decide"]["runtime"],
        **placement("report_html"),
    log:
        f"{LOGS}/report_html/report_html.log",
    conda:
        "../envs/plots.yaml"
    script:
        "../workflow_scripts/shims/report_html.py"
