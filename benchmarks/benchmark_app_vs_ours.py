"""Harness overhead against a third-party tool: OpenVINO's own benchmark_app vs the workflow's latency code.

Both time the same OpenVINO IR on the CPU, one synchronous request on one stream, with the same
thread count and the inference precision our runner applied. benchmark_app runs as

    benchmark_app -m <ir> -d CPU -api sync -nireq 1 -nstreams 1 -hint none -nthreads <T>
                  -infer_precision <f32|bf16|f16> -ip <the IR's input type> -shape <input>[<batch>,...] -t <seconds>

(a fresh process each round; ours too, unless ``--ours-in-this-process``). ``-ip`` matters: without it benchmark_app gives an input it takes for an
image (3 channels, NHWC or NCHW) the element type u8, adding a u8 -> f32 conversion to the model
it compiles (``pre_post_processing`` in its ``utils.py``; its log says ``images ... : u8``), which
OpenVINO may fuse into an INT8 model's first quantized layer. Every engine of the workflow takes
float32 input, so benchmark_app is given the IR's own input type and times the same model. Ours loads a fresh runner and measures with
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
no performance hint) and f32 input: the median of the per-block ratios with its order-statistic 95%
interval. ``--input-check-blocks N`` times the IR with f32 and with u8 input in one process, interleaved,
to show what benchmark_app's default input type alone changes.

    python benchmarks/benchmark_app_vs_ours.py results/<device>/openvino/digits_32px/*/fp32.xml --threads 2
"""

from __future__ import annotations

import argparse
import json
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


def ir_input(xml: Path) -> tuple[str, list[int], str]:
    """The IR's first input name, its shape (dynamic dims as -1) and its element type (benchmark_app's
    ``-ip`` spelling: f32, f16, u8, ...)."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    port = model.inputs[0]
    dims = [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
    return port.get_any_name(), dims, port.get_element_type().get_type_name()


def applied_precision(xml: Path, threads: int) -> str:
    """The inference precision our runner applies to this IR (benchmark_app gets the same)."""
    runner = get_backend("openvino").load_runner(xml, threads)
    try:
        value = str(runner.config.get("INFERENCE_PRECISION_HINT", "f32")).lower()
    finally:
        runner.close()
    return next((p for p in PRECISIONS if p in value), "f32")


def benchmark_app(xml: Path, name: str, shape: list[int], threads: int, seconds: float, precision: str,
                  input_type: str = "f32") -> float:
    """benchmark_app's median latency (ms) of one run, fed ``input_type`` (``-ip``) input."""
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    cmd = [exe, "-m", str(xml), "-d", "CPU", "-api", "sync", "-nireq", "1", "-nstreams", "1", "-hint", "none",
           "-nthreads", str(threads), "-infer_precision", precision, "-ip", input_type, "-t", f"{seconds:g}",
           "-shape", f"{name}[{','.join(str(d) for d in shape)}]"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = MEDIAN.findall(done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"benchmark_app failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout[-2000:]}"
                           f"\n{done.stderr[-2000:]}")
    value, unit = found[-1]
    return float(value) / (1000.0 if unit == "us" else 1.0)  # it prints us below 1 ms


def ours(xml: Path, shape: list[int], threads: int, seconds: float, fresh_process: bool = True) -> tuple[float, float, str]:
    """Our latency code's median latency (ms) of one round (fresh runner, 5 warm-ups), the median wall
    time around Runner.run (ms), and the clock the latency came from. With ``fresh_process`` the round runs
    in a new Python process, as benchmark_app's does and as each workflow job does: a process that has
    run other models measured a large model up to ~15% slower than a fresh one on this VM."""
    if fresh_process:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--ours-once", str(xml), "--shape",
               ",".join(map(str, shape)), "--threads", str(threads), "--seconds", f"{seconds:g}"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"our round failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
        median, wall, clock = json.loads(done.stdout.strip().splitlines()[-1])
        return float(median), float(wall), clock
    batch = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    timing: dict = {}
    samples, _, _ = measure_round(get_backend("openvino"), xml, threads, batch, warmup=5, iterations=1,
                                  min_duration_s=seconds, timing=timing)
    return float(np.median(samples) * 1e3), timing["wall_median_ms"], timing["latency_clock"]


def _benchmark_app_request(xml: Path, shape: list[int], threads: int, precision: str, input_type: str, batch):
    """An infer request compiled as benchmark_app compiles (NUM_STREAMS 1, INFERENCE_NUM_THREADS, the inference
    precision, no performance hint), its input given ``input_type`` as benchmark_app's ``-ip`` does (a
    PrePostProcessor tensor element type), with ``batch`` (cast to that type) set as its input tensor."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    element = {"f32": ov.Type.f32, "f16": ov.Type.f16, "u8": ov.Type.u8, "i8": ov.Type.i8}[input_type]
    core = ov.Core()
    model = core.read_model(str(xml))
    model.reshape({model.inputs[0]: ov.PartialShape(shape)})
    if element != model.inputs[0].get_element_type():
        steps = PrePostProcessor(model)
        steps.input(0).tensor().set_element_type(element)
        model = steps.build()
    compiled = core.compile_model(model, "CPU", {"NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": threads,
                                                 "INFERENCE_PRECISION_HINT": precision})
    request = compiled.create_infer_request()
    request.set_input_tensor(0, ov.Tensor(np.ascontiguousarray(batch.astype(element.to_dtype()))))
    return request


def alternating(pair: tuple, index: int) -> tuple:
    """``pair`` in even rounds or blocks, reversed in odd ones, so drift and position hit both sides alike."""
    return pair if index % 2 == 0 else pair[::-1]


def _sync_loop(request, tasks: int, warmup: int = 5) -> np.ndarray:
    """benchmark.py's sync_inference: ``request.infer(); times.append(request.latency)`` (seconds)."""
    times = []
    for _ in range(tasks + warmup):
        request.infer()
        times.append(request.latency)
    return np.asarray(times[warmup:]) / 1e3


def loop_ratio(xml: Path, shape: list[int], threads: int, precision: str, rounds: int,
               tasks: int) -> tuple[float, float, float, float, float]:
    """In one process, interleaved in blocks (order alternating): our median (ms), benchmark_app's sync loop median
    (ms), and the median of the per-block ratios of medians with its order-statistic 95% interval."""
    from workflow_scripts.stages.latency import measure

    batch = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    runner = get_backend("openvino").load_runner(xml, threads)
    request = _benchmark_app_request(xml, shape, threads, precision, "f32", batch)
    ours, theirs = [], []
    try:
        for block in range(rounds):
            for which in alternating((0, 1), block):
                if which == 0:
                    ours.append(measure(runner.run, batch, 5, tasks, 0,
                                        runtime_timer=getattr(runner, "runtime_latency_s", None)))
                else:
                    theirs.append(_sync_loop(request, tasks))
    finally:
        runner.close()
    ratio, low, high = st.rounds_interval([np.median(a) / np.median(b) for a, b in zip(ours, theirs)])
    mine, bench = np.median(np.concatenate(ours)) * 1e3, np.median(np.concatenate(theirs)) * 1e3
    return float(mine), float(bench), ratio, low, high


def input_type_effect(xml: Path, shape: list[int], threads: int, precision: str, blocks: int,
                      tasks: int) -> tuple[float, float, float, float, float]:
    """What benchmark_app's default u8 input does to the time: the same IR compiled with f32 input (the
    workflow's contract, ``-ip f32``) and with u8 input (benchmark_app's default for an image input), timed
    in one process in interleaved blocks. Returns both medians (ms) and the median per-block f32/u8 ratio
    with its order-statistic 95% interval."""
    batch = np.random.default_rng(0).integers(0, 256, shape)
    requests = {kind: _benchmark_app_request(xml, shape, threads, precision, kind, batch) for kind in ("f32", "u8")}
    times: dict = {"f32": [], "u8": []}
    for block in range(blocks):
        for kind in alternating(("f32", "u8"), block):
            times[kind].append(_sync_loop(requests[kind], tasks))
    ratio, low, high = st.rounds_interval([np.median(a) / np.median(b) for a, b in zip(times["f32"], times["u8"])])
    return (float(np.median(np.concatenate(times["f32"])) * 1e3), float(np.median(np.concatenate(times["u8"])) * 1e3),
            ratio, low, high)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("irs", nargs="*", type=Path, help="OpenVINO IR files (.xml)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per tool and round")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--benchmark-app-input", default="model",
                        help="benchmark_app's -ip: 'model' (the IR's input type, as our runner is fed) or a type such "
                             "as u8 (benchmark_app's own default for an image input, which times another model)")
    parser.add_argument("--loop-rounds", type=int, default=10, help="in-process interleaved blocks (0: none)")
    parser.add_argument("--loop-tasks", type=int, default=200, help="tasks per tool and block")
    parser.add_argument("--ours-in-this-process", action="store_true",
                        help="measure our rounds in this script's process instead of a fresh one per round")
    parser.add_argument("--ours-once", type=Path, help=argparse.SUPPRESS)  # one round of ours, printed as JSON
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    parser.add_argument("--input-check-blocks", type=int, default=0,
                        help="also time the IR with f32 and with u8 input (benchmark_app's default) in this many "
                             "interleaved blocks (0: not)")
    args = parser.parse_args()
    if args.ours_once:
        shape = [int(d) for d in args.shape.split(",")]
        print(json.dumps(ours(args.ours_once, shape, args.threads, args.seconds, fresh_process=False)))
        return
    if not args.irs:
        parser.error("name at least one OpenVINO IR (.xml)")

    print(f"start: {load_average()}", flush=True)
    print(f"{'IR':64s} {'prec':>5s} {'ours ms':>9s} {'bench_app ms':>12s} {'ours/bench_app [95% CI]':>26s} "
          f"{'our wall ms':>11s} {'wall/bench_app [95% CI]':>26s}")
    for xml in args.irs:
        name, dims, input_type = ir_input(xml)
        if args.benchmark_app_input != "model":
            input_type = args.benchmark_app_input
        shape = [args.batch] + [d if d > 0 else 1 for d in dims[1:]]
        precision = applied_precision(xml, args.threads)
        mine, walls, theirs, clocks = [], [], [], set()
        for r in range(args.rounds):
            for which in alternating((0, 1), r):
                if which == 0:
                    median, wall, clock = ours(xml, shape, args.threads, args.seconds,
                                               fresh_process=not args.ours_in_this_process)
                    mine.append(median)
                    walls.append(wall)
                    clocks.add(clock)
                else:
                    theirs.append(benchmark_app(xml, name, shape, args.threads, args.seconds, precision,
                                                input_type))
        ratio, low, high = st.rounds_interval(np.asarray(mine) / np.asarray(theirs))
        wratio, wlow, whigh = st.rounds_interval(np.asarray(walls) / np.asarray(theirs))
        print(f"{str(xml)[-64:]:64s} {precision:>5s} {np.median(mine):9.4f} {np.median(theirs):12.4f} "
              f"{ratio:8.3f} [{low:.3f}, {high:.3f}]{'':9s} {np.median(walls):11.4f} "
              f"{wratio:8.3f} [{wlow:.3f}, {whigh:.3f}]")
        print(f"  our latency clock: {', '.join(sorted(clocks))}; benchmark_app input type: {input_type}")
        print(f"  per round ours: {', '.join(f'{v:.4f}' for v in mine)}")
        print(f"  per round our wall: {', '.join(f'{v:.4f}' for v in walls)}")
        print(f"  per round benchmark_app: {', '.join(f'{v:.4f}' for v in theirs)}", flush=True)
        if args.loop_rounds:
            mine_ms, bench_ms, loop, low, high = loop_ratio(xml, shape, args.threads, precision, args.loop_rounds,
                                                            args.loop_tasks)
            print(f"  in one process, {args.loop_rounds} interleaved blocks of {args.loop_tasks} tasks: ours "
                  f"{mine_ms:.4f} ms, benchmark_app's sync loop {bench_ms:.4f} ms, ratio {loop:.3f} "
                  f"[{low:.3f}, {high:.3f}]; {load_average()}", flush=True)
        if args.input_check_blocks:
            f32_ms, u8_ms, effect, low, high = input_type_effect(xml, shape, args.threads, precision,
                                                                  args.input_check_blocks, args.loop_tasks)
            print(f"  input type, in one process, {args.input_check_blocks} interleaved blocks: f32 input {f32_ms:.4f} "
                  f"ms, u8 input (benchmark_app's default) {u8_ms:.4f} ms, f32/u8 {effect:.3f} [{low:.3f}, {high:.3f}]",
                  flush=True)
    print(f"end: {load_average()}")


if __name__ == "__main__":
    main()
