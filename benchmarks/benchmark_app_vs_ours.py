"""Harness overhead against a third-party tool: OpenVINO's own benchmark_app vs the workflow's latency code.

Both time the same OpenVINO IR on the CPU, one synchronous request on one stream, with the same
thread count and the inference precision our runner applied. benchmark_app runs as

    benchmark_app -m <ir> -d CPU -api sync -nireq 1 -nstreams 1 -hint none -nthreads <T>
                  -infer_precision <f32|bf16|f16> -shape <input>[<batch>,...] -t <seconds>

(a fresh process each round), ours loads a fresh runner and measures with
``workflow_scripts.stages.latency.measure_round`` for the same time. The two alternate in rounds (ours
first in even rounds, benchmark_app first in odd ones) so drift hits both alike. Per IR it prints
both medians (median over rounds of each round's median) and the ratio ours / benchmark_app,
paired by round, with its distribution-free 95% interval over rounds (6 rounds or more).

Both time a task with OpenVINO's own per-call timer (``InferRequest.latency``: benchmark_app's
sync loop reports it, and the workflow's OpenVINO runner hands it to the harness). The wall time
around our ``Runner.run`` (the latency tables' ``wall_median_ms``: what a Python caller waits) is
printed beside it with its own ratio, so the Python call's cost stays visible. The load average
is printed before and after.

On a loaded machine the round medians of two processes move by more than the 5% asked of the ratio,
so ``--loop-rounds N`` (default 10) also compares, in one process and interleaved in blocks of
``--loop-tasks`` tasks, our ``measure`` on our runner with benchmark_app's own sync loop
(``request.infer(); times.append(request.latency)``, benchmark.py's ``sync_inference``) on a request
compiled with benchmark_app's properties (NUM_STREAMS 1, INFERENCE_NUM_THREADS, INFERENCE_PRECISION_HINT,
no performance hint): the ratio of medians, and its range over blocks.

    python benchmarks/benchmark_app_vs_ours.py results/<device>/openvino/digits_32px/*/fp32.xml --threads 2
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workflow_scripts.measure import statistics as st
from workflow_scripts.backends import get_backend
from workflow_scripts.stages.latency import measure_round

MEDIAN = re.compile(r"Median:\s+([0-9.]+)\s*(ms|us)")
PRECISIONS = {"f32": "f32", "bf16": "bf16", "f16": "f16"}


def ir_input(xml: Path) -> tuple[str, list[int]]:
    """The IR's first input name and its shape (dynamic dims as -1)."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    port = model.inputs[0]
    dims = [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
    return port.get_any_name(), dims


def applied_precision(xml: Path, threads: int) -> str:
    """The inference precision our runner applies to this IR (benchmark_app gets the same)."""
    runner = get_backend("openvino").load_runner(xml, threads)
    try:
        value = str(runner.config.get("INFERENCE_PRECISION_HINT", "f32")).lower()
    finally:
        runner.close()
    return next((p for p in PRECISIONS if p in value), "f32")


def benchmark_app(xml: Path, name: str, shape: list[int], threads: int, seconds: float, precision: str) -> float:
    """benchmark_app's median latency (ms) of one run."""
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    cmd = [exe, "-m", str(xml), "-d", "CPU", "-api", "sync", "-nireq", "1", "-nstreams", "1", "-hint", "none",
           "-nthreads", str(threads), "-infer_precision", precision, "-t", f"{seconds:g}",
           "-shape", f"{name}[{','.join(str(d) for d in shape)}]"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = MEDIAN.findall(done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"benchmark_app failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout[-2000:]}"
                           f"\n{done.stderr[-2000:]}")
    value, unit = found[-1]
    return float(value) / (1000.0 if unit == "us" else 1.0)  # it prints us below 1 ms


def ours(xml: Path, shape: list[int], threads: int, seconds: float) -> tuple[float, float, str]:
    """Our latency code's median latency (ms) of one round (fresh runner, 5 warm-ups), the median wall
    time around Runner.run (ms), and the clock the latency came from."""
    batch = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    timing: dict = {}
    samples, _, _ = measure_round(get_backend("openvino"), xml, threads, batch, warmup=5, iterations=1,
                                  min_duration_s=seconds, timing=timing)
    return float(np.median(samples) * 1e3), timing["wall_median_ms"], timing["latency_clock"]


def loop_ratio(xml: Path, shape: list[int], threads: int, precision: str, rounds: int,
               tasks: int) -> tuple[float, float, float, float, float]:
    """In one process, interleaved in blocks: our median (ms), benchmark_app's sync loop median (ms), the ratio
    of medians and the min/max of the per-block ratios."""
    import openvino as ov

    from workflow_scripts.stages.latency import measure

    batch = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    runner = get_backend("openvino").load_runner(xml, threads)
    core = ov.Core()
    model = core.read_model(str(xml))
    model.reshape({model.inputs[0]: ov.PartialShape(shape)})
    compiled = core.compile_model(model, "CPU", {"NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": threads,
                                                 "INFERENCE_PRECISION_HINT": precision})
    request = compiled.create_infer_request()
    request.set_input_tensor(0, ov.Tensor(batch))
    ours, theirs = [], []
    try:
        for _ in range(rounds):
            ours.append(measure(runner.run, batch, 5, tasks, 0, runtime_timer=getattr(runner, "runtime_latency_s", None)))
            times = []
            for _ in range(tasks + 5):  # benchmark.py's sync_inference
                request.infer()
                times.append(request.latency)
            theirs.append(np.asarray(times[5:]) / 1e3)
    finally:
        runner.close()
    per_block = [np.median(a) / np.median(b) for a, b in zip(ours, theirs)]
    mine, bench = np.median(np.concatenate(ours)) * 1e3, np.median(np.concatenate(theirs)) * 1e3
    return float(mine), float(bench), float(mine / bench), float(min(per_block)), float(max(per_block))


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("irs", nargs="+", type=Path, help="OpenVINO IR files (.xml)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per tool and round")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--loop-rounds", type=int, default=10, help="in-process interleaved blocks (0: none)")
    parser.add_argument("--loop-tasks", type=int, default=200, help="tasks per tool and block")
    args = parser.parse_args()

    print(f"start: {load_average()}", flush=True)
    print(f"{'IR':64s} {'prec':>5s} {'ours ms':>9s} {'bench_app ms':>12s} {'ours/bench_app [95% CI]':>26s} "
          f"{'our wall ms':>11s} {'wall/bench_app [95% CI]':>26s}")
    for xml in args.irs:
        name, dims = ir_input(xml)
        shape = [args.batch] + [d if d > 0 else 1 for d in dims[1:]]
        precision = applied_precision(xml, args.threads)
        mine, walls, theirs, clocks = [], [], [], set()
        for r in range(args.rounds):
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for which in order:
                if which == 0:
                    median, wall, clock = ours(xml, shape, args.threads, args.seconds)
                    mine.append(median)
                    walls.append(wall)
                    clocks.add(clock)
                else:
                    theirs.append(benchmark_app(xml, name, shape, args.threads, args.seconds, precision))
        ratio, low, high = st.rounds_interval(np.asarray(mine) / np.asarray(theirs))
        wratio, wlow, whigh = st.rounds_interval(np.asarray(walls) / np.asarray(theirs))
        print(f"{str(xml)[-64:]:64s} {precision:>5s} {np.median(mine):9.4f} {np.median(theirs):12.4f} "
              f"{ratio:8.3f} [{low:.3f}, {high:.3f}]{'':9s} {np.median(walls):11.4f} "
              f"{wratio:8.3f} [{wlow:.3f}, {whigh:.3f}]")
        print(f"  our latency clock: {', '.join(sorted(clocks))}")
        print(f"  per round ours: {', '.join(f'{v:.4f}' for v in mine)}")
        print(f"  per round our wall: {', '.join(f'{v:.4f}' for v in walls)}")
        print(f"  per round benchmark_app: {', '.join(f'{v:.4f}' for v in theirs)}", flush=True)
        if args.loop_rounds:
            mine_ms, bench_ms, loop, low, high = loop_ratio(xml, shape, args.threads, precision, args.loop_rounds,
                                                            args.loop_tasks)
            print(f"  in one process, {args.loop_rounds} interleaved blocks of {args.loop_tasks} tasks: ours "
                  f"{mine_ms:.4f} ms, benchmark_app's sync loop {bench_ms:.4f} ms, ratio {loop:.3f} "
                  f"(blocks {low:.3f}-{high:.3f}); {load_average()}", flush=True)
    print(f"end: {load_average()}")


if __name__ == "__main__":
    main()
