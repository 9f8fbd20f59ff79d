"""The compression benchmark (study Fig. 3): each PTQ stage timed over warm-up and measured runs.

Every run writes a complete artifact to a temporary name; the last measured run's artifact
becomes the output, so the workflow never builds it yet again after measuring.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from workflow_scripts.core.artifacts import publish, scratch_path
from workflow_scripts.measure.monitor import ResourceMonitor

log = logging.getLogger(__name__)


def timed_stage(stage: str, produce: Callable[[Path], dict], output: str | Path, warmup: int, repeats: int,
                monitor: ResourceMonitor, check: Callable[[Path], dict] | None = None,
                companions: tuple[str, ...] = ()) -> tuple[pd.DataFrame, dict]:
    """Run ``produce(tmp_path) -> facts`` warmup+repeats times; keep the last output; return per-run rows.

    Rows carry ``run`` (0-based over all runs), ``warmup`` (True for discarded runs), the
    stage's wall time ``duration_s`` and whatever facts ``produce`` returned. ``check(tmp)``
    validates the kept artifact before it takes its final name (it raises to refuse it).
    ``companions`` are suffixes of files ``produce`` writes beside ``tmp_path`` that belong to it
    (OpenVINO's ``.bin``): they are published first and removed with discarded runs.
    """
    rows = []
    last_facts: dict = {}
    total = warmup + repeats
    for run in range(total):
        is_warmup = run < warmup
        monitor.stage = f"{stage}:{'warmup' if is_warmup else 'measured'}:{run}"
        with scratch_path(output) as tmp:
            beside = [(tmp.with_suffix(f".{ext}"), Path(output).with_suffix(f".{ext}")) for ext in companions]
            try:
                started = time.perf_counter()
                facts = produce(tmp)
                duration = time.perf_counter() - started
                if run == total - 1:
                    if check is not None:
                        facts.update(check(tmp))
                    for scratch, final in beside:
                        publish(scratch, final)
                    publish(tmp, output)
            finally:
                for scratch, _ in beside:
                    scratch.unlink(missing_ok=True)
        log.info("%s run %d/%d (%s): %.2f s", stage, run + 1, total, "warm-up" if is_warmup else "measured", duration)
        rows.append({"stage": stage, "run": run, "warmup": is_warmup, "duration_s": duration,
                     **{k: v for k, v in facts.items() if not isinstance(v, (str, bytes, dict))}})
        last_facts = facts
    monitor.stage = ""
    return pd.DataFrame(rows), last_facts
