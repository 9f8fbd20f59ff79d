"""A sampler thread recording process CPU %, RSS and system memory % (plus GPU where present)."""

from __future__ import annotations

import os
import threading
import time

import pandas as pd
import psutil


class ResourceMonitor:
    """Context manager sampling resources every ``interval_s`` on a daemon thread.

    ``extra_samplers`` are objects with ``sample() -> dict[str, float]`` and ``close()``
    (GPU samplers from ``workflow_scripts.measure.gpu_monitor``); their columns join each row.
    ``stage`` labels rows so one trace can cover several steps (e.g. export, build).
    """

    def __init__(self, interval_s: float = 0.1, pid: int | None = None, extra_samplers=(),
                 children_refresh_s: float = 1.0):
        self.interval_s = float(interval_s)
        self.process = psutil.Process(pid or os.getpid())
        # Listing children scans every process on the machine (~4 ms): do it at most every
        # children_refresh_s, and keep each child's Process object, whose CPU counter needs the
        # previous call (a fresh object reads 0 %).
        self.children_refresh_s = float(children_refresh_s)
        self._child_cache: dict[int, psutil.Process] = {}
        self._children_at = float("-inf")
        self._cpus = psutil.cpu_count() or 1
        self.extra_samplers = [s for s in extra_samplers if s is not None]
        self.stage = ""
        self.rows: list[dict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _sample(self) -> dict:
        with self.process.oneshot():
            cpu = self.process.cpu_percent(None)
            rss = self.process.memory_info().rss
            for child in self._children():
                try:
                    cpu += child.cpu_percent(None)
                    rss += child.memory_info().rss
                except psutil.Error:
                    pass
        row = {
            "elapsed_s": time.perf_counter() - self._t0,
            "unix_time_s": time.time(),
            "stage": self.stage,
            "cpu_percent": cpu,
            "cpu_percent_of_machine": cpu / self._cpus,
            "rss_mb": rss / 1e6,
            "system_memory_percent": psutil.virtual_memory().percent,
        }
        for sampler in self.extra_samplers:
            row.update(sampler.sample())
        return row

    def _children(self) -> list[psutil.Process]:
        now = time.perf_counter()
        if now - self._children_at >= self.children_refresh_s:
            self._children_at = now
            try:
                current = self.process.children(recursive=True)
            except psutil.Error:
                current = []
            fresh = {}
            for child in current:
                known = self._child_cache.get(child.pid)
                if known is None:
                    try:
                        child.cpu_percent(None)  # prime the counter
                    except psutil.Error:
                        continue
                fresh[child.pid] = known or child
            self._child_cache = fresh
        return list(self._child_cache.values())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.rows.append(self._sample())

    def start(self) -> "ResourceMonitor":
        """Prime CPU counters and start sampling."""
        self._t0 = time.perf_counter()
        self.process.cpu_percent(None)
        self.rows.append(self._sample())
        self._thread = threading.Thread(target=self._loop, name="resource-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> pd.DataFrame:
        """Stop sampling, take a last sample, and return the time series."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.rows.append(self._sample())
        for sampler in self.extra_samplers:
            sampler.close()
        return self.frame()

    def frame(self) -> pd.DataFrame:
        """The samples so far as a DataFrame."""
        return pd.DataFrame(self.rows)

    def __enter__(self) -> "ResourceMonitor":
        return self.start()

    def __exit__(self, *exc) -> None:
        if not self._stop.is_set():
            self.stop()


def summarize_resources(samples: pd.DataFrame) -> dict[str, float]:
    """Mean and peak of every numeric resource column (the first sample's CPU % is a primer)."""
    out: dict[str, float] = {}
    body = samples.iloc[1:] if len(samples) > 2 else samples
    for column in body.columns:
        if column in ("elapsed_s", "unix_time_s", "stage") or not pd.api.types.is_numeric_dtype(body[column]):
            continue
        out[f"{column}_mean"] = float(body[column].mean())
        out[f"{column}_peak"] = float(body[column].max())
    return out


def make_monitor(interval_s: float) -> ResourceMonitor:
    """A monitor with the GPU sampler this machine supports (none on CPU-only machines)."""
    samplers = []
    try:
        from workflow_scripts.measure.gpu_monitor import make_gpu_sampler

        samplers.append(make_gpu_sampler(interval_s))
    except ImportError:
        pass
    return ResourceMonitor(interval_s, extra_samplers=samplers)
