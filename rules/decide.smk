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
    + [f"{REPORT_HTML_DIR}/figures.html", f"{REPORT_HTML_DIR}/answer.rst"]
)
# Report categories and subcategories (snakemake --report): the decision first, rendered; every table
# with its own caption (report/table_<name>.rst), grouped by what it measures.
TABLE_SUBCATEGORY = {
    "latency": "Latency and accuracy",
    "accuracy": "Latency and accuracy",
    "size": "Latency and accuracy",
    "runoff": "Latency and accuracy",
    "resources": "Resources during the latency benchmark",
    "compression": "Compression (PTQ) time and resources",
    "compression_stats": "Compression (PTQ) time and resources",
    "compression_resources": "Compression (PTQ) time and resources",
    "claims": "The study's claims",
}
PAGE_REPORT = {
    # page: (category, subcategory, caption)
    "decision": ("Decision", "The answer and every candidate", "decision"),
    "claims": ("Summary", "The study's claims, recomputed", "claims"),
    "summary": ("Summary", "End-of-run summary", "run_summary"),
}


rule decide:
    input:
        tables=rules.summarize.output.tables,
    output:
        # Shown rendered in the report (html/decision_md.html, rule report_html), not as a download.
        markdown=f"{SUMMARY_DIR}/decision.md",
        table=f"{SUMMARY_DIR}/decision.parquet",
    message:
        "Deciding the engine to deploy per model under the budgets of config block decision"
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
        # Shown rendered in the report (html/summary_md.html, rule report_html).
        summary=f"{SUMMARY_DIR}/summary.md",
    message:
        "Writing the end-of-run summary (summary.md; printed when the run finishes)"
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
            report(
                f"{REPORT_HTML_DIR}/{name}.html",
                category="Decision" if name == "decision" else "Tables",
                subcategory="The answer and every candidate" if name == "decision" else TABLE_SUBCATEGORY[name],
                labels={"page": "every candidate (table)"} if name == "decision" else {"table": name},
                caption=f"../report/table_{name}.rst",
            )
            for name in REPORT_TABLES
        ],
        pages=[
            report(
                f"{REPORT_HTML_DIR}/{name}_md.html",
                category=PAGE_REPORT[name][0],
                subcategory=PAGE_REPORT[name][1],
                labels={"page": "the decision (rendered)" if name == "decision" else name},
                caption=f"../report/{PAGE_REPORT[name][2]}.rst",
            )
            for name in REPORT_PAGES
        ],
        gallery=report(
            f"{REPORT_HTML_DIR}/figures.html",
            category="Figures",
            subcategory="All figures on one page",
            labels={"figure": "all, with captions"},
            caption="../report/figures.rst",
        ),
        # The answer per model for the report's main page (report/workflow.rst reads it).
        answer=f"{REPORT_HTML_DIR}/answer.rst",
    message:
        "Writing the report's HTML pages (tables, decision, summary, figures)"
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
