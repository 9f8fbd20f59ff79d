"""Scheduling (issue 29): a timed job runs alone, untimed jobs share the cores.

Snakemake starts a job only when the cores it claims (``threads:``) are free. A timed rule (it
measures build time, latency or the export's stage time: ``placement.is_measuring``) claims every
core of the run, so nothing runs beside it; an untimed rule (training, evaluations, dataset
preparation, summary, figures, report) claims one, so two of them run at once on ``--cores 2``.

The unit test reads every rule's claim from the parsed workflow; the integration test runs the
workflow with ``--cores 2`` and reads each job's process lifetime (recorded by a ``sitecustomize``
module that every job's Python process imports at start and that writes its start and end at exit).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.cli import ENGINE_DIR, MODEL_DIR, TINY, snakemake, tiny
from workflow_scripts.fleet.placement import is_measuring

REPO = Path(__file__).resolve().parent.parent

# Rules that measure nothing: the quickstart's jobs that must be able to share the cores.
UNTIMED = {"prepare_dataset", "train_model", "evaluate_keras", "evaluate_engine", "summarize", "plot_figures",
           "decide", "run_summary", "report_html", "import_user_model"}

CLAIMS = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
    snakefile, workdir, configfile, cores = sys.argv[1:5]
    with SnakemakeApi(OutputSettings(quiet=None)) as api:
        workflow_api = api.workflow(resource_settings=ResourceSettings(cores=int(cores)),
                                    config_settings=ConfigSettings(configfiles=[Path(configfile)]),
                                    snakefile=Path(snakefile), workdir=Path(workdir))
        claims = {}
        for rule in workflow_api._workflow.rules:
            claim = rule.resources["_cores"]  # threads: a number, or a function (job_cores) of the job
            claims[rule.name] = claim._evaluator(None) if claim.is_evaluable() else claim.value
    print("CLAIMS " + json.dumps(claims))
""")


def rule_claims(tmp_path: Path, cores: int, config: dict | None = None) -> dict[str, int]:
    """{rule: cores it claims} of the parsed workflow, run with ``--cores cores`` (fresh process)."""
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config or TINY))
    out = subprocess.run([sys.executable, "-c", CLAIMS, str(REPO / "Snakefile"), str(tmp_path), str(configfile),
                          str(cores)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    lines = [line for line in out.stdout.splitlines() if line.startswith("CLAIMS ")]
    assert out.returncode == 0 and lines, out.stdout[-2000:] + out.stderr[-4000:]
    return json.loads(lines[-1][len("CLAIMS "):])


@pytest.mark.parametrize("cores", [2, 3])
def test_every_timed_rule_claims_all_cores_and_untimed_rules_one(tmp_path, cores):
    claims = rule_claims(tmp_path, cores)
    timed = {rule for rule in claims if is_measuring(rule)}
    # The rules whose rows report a time: exports, engine builds (per backend), latency and its runoff.
    for expected in ("export_onnx", "import_user_onnx", "benchmark_latency", "benchmark_latency_runoff",
                     "build_engine_onnxruntime", "build_int8_engine_onnxruntime"):
        assert expected in timed, (expected, sorted(claims))
    alone = {rule: claims[rule] for rule in timed if claims[rule] != cores}
    assert not alone, f"timed rules that do not claim all {cores} cores (another job could run beside them): {alone}"
    untimed = {rule: claims[rule] for rule in UNTIMED & set(claims)}
    assert {"train_model", "evaluate_keras", "evaluate_engine", "summarize"} <= set(untimed), sorted(claims)
    greedy = {rule: claim for rule, claim in untimed.items() if claim != 1}
    assert not greedy, f"untimed rules that claim more than one core (nothing could run beside them): {greedy}"


def test_training_keeps_its_threads_whatever_it_claims():
    """The train_model job claims one core but TensorFlow runs train.threads threads (the weights
    depend on the thread count): the shim passes the config value, not the job's claim."""
    shim = (REPO / "workflow_scripts" / "shims" / "train_model.py").read_text()
    assert 'threads=train["threads"]' in shim and "sm.threads" not in shim


# --- the real CLI: process lifetimes of every job --------------------------------------------------

SITECUSTOMIZE = textwrap.dedent("""
    # Test helper (tests/test_scheduling.py): record this process's lifetime when it is a Snakemake job.
    import atexit, json, os, sys, time
    _started = time.time()

    def _record():
        job = getattr(sys.modules.get("__main__"), "snakemake", None)
        if job is None:
            return
        folder = os.environ["EDGEPTQ_JOB_TIMES"]
        record = {"rule": job.rule, "wildcards": dict(job.wildcards.items()), "start": _started, "end": time.time(),
                  "pid": os.getpid()}
        with open(os.path.join(folder, f"{os.getpid()}.json"), "w") as fh:
            json.dump(record, fh)

    atexit.register(_record)
""")


def overlapping(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


@pytest.mark.slow
def test_timed_jobs_ran_alone_and_untimed_jobs_together(tmp_path):
    """Two models on --cores 2: both trainings run at once (each claims one core), and no timed job
    (export, builds, latency) overlapped any other job."""
    hooks, times, workdir = tmp_path / "hooks", tmp_path / "times", tmp_path / "run"
    for folder in (hooks, times, workdir):
        folder.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    models = ["MobileNetV3Small", "MobileNetV3Large"]
    config = tiny(models=models, precisions=["fp32"])
    # Two batches per epoch: the test is about scheduling, not about what is learnt.
    config["train"] = {**config["train"], "max_images": 64}
    targets = []
    for model in models:
        targets += [MODEL_DIR.replace("MobileNetV3Small", model) + "/accuracy.parquet",
                    ENGINE_DIR.replace("MobileNetV3Small", model) + "/fp32_latency.parquet",
                    ENGINE_DIR.replace("MobileNetV3Small", model) + "/fp32_accuracy.parquet"]
    import os

    pythonpath = os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")]))
    snakemake(workdir, *targets, config=config, cores=2,
              env={"PYTHONPATH": pythonpath, "EDGEPTQ_JOB_TIMES": str(times)}, timeout=900)
    jobs = [json.loads(path.read_text()) for path in sorted(times.glob("*.json"))]
    rules = sorted(job["rule"] for job in jobs)
    # Every job recorded itself: prepare, and per model train, Keras evaluation, export, build, latency
    # and engine evaluation.
    assert len(jobs) == 1 + 6 * len(models), rules
    assert rules.count("train_model") == 2 and any(is_measuring(rule) for rule in rules), rules
    trainings = [job for job in jobs if job["rule"] == "train_model"]
    assert overlapping(*trainings), f"the two trainings did not run at once: {trainings}"
    for timed in (job for job in jobs if is_measuring(job["rule"])):
        beside = [f"{job['rule']} {job['wildcards']}" for job in jobs
                  if job is not timed and overlapping(timed, job)]
        assert not beside, f"timed job {timed['rule']} {timed['wildcards']} ran beside {beside}"
