"""A read-only results_dir, a moved checkout (issue 25, item 10; the end-of-run hint under another
results_dir: tests/test_result_folders.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.cli import REPO, TINY, job_counts, snakemake_command
from tests.test_bad_input import chown_tree, unprivileged_way


def rule_params_blocks(text: str) -> list[tuple[str, str]]:
    """(rule name, text of its params: block) of every rule in a .smk file."""
    blocks, rule = [], "?"
    lines = text.splitlines()
    for i, line in enumerate(lines):
        found = re.match(r"\s*rule\s+(\w+)\s*:", line)
        if found:
            rule = found.group(1)
        if re.match(r"\s*params\s*:", line):
            indent = len(line) - len(line.lstrip())
            body = []
            for following in lines[i + 1:]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                body.append(following)
            blocks.append((rule, "\n".join(body)))
    return blocks


def test_no_rule_param_holds_a_path_of_the_checkout():
    """A param holding workflow.basedir (an absolute path) changes when the checkout moves, and
    Snakemake's params trigger then reruns the job (the report rule did)."""
    offenders = [(smk.name, rule) for smk in sorted((REPO / "rules").glob("*.smk"))
                 for rule, body in rule_params_blocks(smk.read_text())
                 if "workflow.basedir" in body or "__file__" in body or str(REPO) in body]
    assert offenders == []


@pytest.mark.slow  # the real snakemake CLI, as an unprivileged user
def test_a_read_only_results_dir_allows_a_dry_run_and_a_report_elsewhere():
    work = Path(tempfile.mkdtemp(prefix="edgeptq-readonly-plan-"))
    results = work / "results"
    results.mkdir()
    env = {**os.environ, "HOME": str(work / "home"), "MPLCONFIGDIR": str(work / "home" / "mpl"),
           "XDG_CACHE_HOME": str(work / "home" / "cache")}
    try:
        results.chmod(0o555)
        way = unprivileged_way(work, results, env)
        if way is None:
            pytest.skip("cannot make a folder read-only for the workflow (root, no nobody/setpriv)")
        prefix, kwargs, _ = way
        config = {**TINY, "results_dir": str(results)}
        dry = [*prefix, *snakemake_command(work, "-n", config=config)]
        report = [*prefix, *snakemake_command(work, "--report", str(work / "elsewhere.html"), config=config,
                                               cores=None)]
        if kwargs:
            chown_tree(work, kwargs["user"], kwargs["group"])
            results.chmod(0o555)
        planned = subprocess.run(dry, cwd=work, env=env, capture_output=True, text=True, timeout=300, **kwargs)
        text = planned.stdout + planned.stderr
        assert planned.returncode == 0, text[-3000:]
        assert job_counts(text).get("train_model") == 1 and "not writable" not in text
        reported = subprocess.run(report, cwd=work, env=env, capture_output=True, text=True, timeout=300, **kwargs)
        text = reported.stdout + reported.stderr
        assert "not writable" not in text and "results_dir" not in text, text[-3000:]
        assert list(results.iterdir()) == []
    finally:
        results.chmod(0o755)
        shutil.rmtree(work, ignore_errors=True)
