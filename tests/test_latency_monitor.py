import time

import numpy as np
import pandas as pd

from workflow_scripts.stages.latency import measure, summarize_latency
from workflow_scripts.measure.monitor import ResourceMonitor, summarize_resources


def test_latency_statistics_match_numpy():
    rng = np.random.default_rng(0)
    samples = rng.gamma(5, 0.002, size=400)  # >= 299 tasks: p99 is supported
    ms = samples * 1e3
    stats = summarize_latency(samples, batch_size=4)
    assert stats["iterations"] == 400
    assert np.isclose(stats["latency_mean_ms"], ms.mean())
    assert np.isclose(stats["latency_median_ms"], np.median(ms))
    assert np.isclose(stats["latency_p90_ms"], np.percentile(ms, 90))
    assert np.isclose(stats["latency_p99_ms"], np.percentile(ms, 99))
    assert np.isclose(stats["latency_std_ms"], ms.std(ddof=1))
    assert np.isclose(stats["latency_cv"], ms.std(ddof=1) / ms.mean())
    assert np.isclose(stats["latency_per_image_median_ms"], np.median(ms) / 4)
    assert np.isclose(stats["throughput_images_per_s"], 4 * 400 / samples.sum())


def test_measure_honours_warmup_count_and_duration():
    calls = []
    samples = measure(lambda b: calls.append(b), batch=1, warmup=5, iterations=30, min_duration_s=0)
    assert len(samples) == 30 and len(calls) == 35
    calls.clear()
    samples = measure(lambda b: calls.append(b), batch=1, warmup=5, iterations=30, min_duration_s=0, tasks_needed=299)
    assert len(samples) == 299 and len(calls) == 304
    started = time.perf_counter()
    samples = measure(lambda b: time.sleep(0.001), batch=1, warmup=0, iterations=3, min_duration_s=0.2)
    assert len(samples) > 3 and time.perf_counter() - started >= 0.2


def test_monitor_samples_cpu_and_memory_at_its_interval():
    with ResourceMonitor(interval_s=0.05) as monitor:
        monitor.stage = "busy"
        end = time.perf_counter() + 0.6
        block = np.ones((1500, 1500))
        while time.perf_counter() < end:
            block @ block
    frame = monitor.frame()
    assert len(frame) >= 8
    gaps = np.diff(frame["elapsed_s"].to_numpy())
    assert np.median(gaps) < 0.2
    assert frame["rss_mb"].min() > 10
    assert frame.loc[frame["stage"] == "busy", "cpu_percent"].max() > 20
    summary = summarize_resources(frame)
    assert summary["cpu_percent_peak"] >= summary["cpu_percent_mean"] > 0
    assert 0 < summary["system_memory_percent_mean"] <= 100


def test_summarize_resources_ignores_labels():
    frame = pd.DataFrame({"elapsed_s": [0, 1, 2], "unix_time_s": [0, 1, 2], "stage": ["a"] * 3, "rss_mb": [1.0, 2.0, 4.0]})
    assert summarize_resources(frame) == {"rss_mb_mean": 3.0, "rss_mb_peak": 4.0}


def test_device_breakdown_uses_timed_infer_when_present():
    from types import SimpleNamespace

    from workflow_scripts.stages.latency import device_breakdown

    class CpuRunner:
        def run(self, batch):
            return batch

    assert device_breakdown(CpuRunner(), np.zeros(1), 3) == {}

    class GpuLikeRunner(CpuRunner):
        def __init__(self):
            self.calls = 0

        def timed_infer(self, batch):
            self.calls += 1
            return SimpleNamespace(h2d_ms=0.1 * self.calls, compute_ms=1.0 * self.calls, d2h_ms=0.01)

    runner = GpuLikeRunner()
    parts = device_breakdown(runner, np.zeros(1), 3)
    assert runner.calls == 3
    assert np.isclose(parts["h2d_median_ms"], 0.2) and np.isclose(parts["compute_median_ms"], 2.0)
    assert np.isclose(parts["d2h_median_ms"], 0.01)


def test_monitor_counts_a_busy_child_process_and_lists_children_once_a_second():
    import subprocess
    import sys
    import time

    from workflow_scripts.measure.monitor import ResourceMonitor

    child = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 3\nwhile time.time() < end: pass"])
    try:
        monitor = ResourceMonitor(0.1, children_refresh_s=1.0)
        listed = []
        real_children = monitor.process.children

        def counting_children(**kwargs):
            listed.append(time.perf_counter())
            return real_children(**kwargs)

        monitor.process.children = counting_children
        with monitor:
            time.sleep(2.0)
        samples = monitor.frame()
    finally:
        child.kill()
    # ~20 samples, but the process table is scanned about twice (every 1 s), not every sample.
    assert len(samples) >= 10 and 1 <= len(listed) <= 4, (len(samples), len(listed))
    # The child's CPU counts: a busy loop is several percent even on a loaded machine (a fresh
    # psutil.Process per sample would read 0 % for it every time).
    # (A machine shared by five jobs on two cores gave the child under 20 %: 5 % still tells it from 0.)
    assert samples["cpu_percent"].iloc[2:].max() > 5, samples["cpu_percent"].tolist()
