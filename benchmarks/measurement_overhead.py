"""Measurement overhead: edgeptq's latency loop against a bare InferenceSession.run loop.

Both loops time the same engine file, with the same thread count, in the same process,
interleaved in rounds so machine noise hits both alike. Prints the ratio of medians per engine.

    python benchmarks/measurement_overhead.py results/<device>/onnxruntime/digits_32px/*/*.onnx
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from workflow_scripts.backends.onnxruntime import load_runner, session_options
from workflow_scripts.stages.latency import measure


def bare_loop(session, name, batch, iterations):
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        session.run(None, {name: batch})
        samples.append(time.perf_counter() - t0)
    return np.asarray(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("engines", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--input-size", type=int, default=32)
    args = parser.parse_args()

    import onnxruntime as ort

    batch = np.random.default_rng(0).uniform(0, 255, (1, args.input_size, args.input_size, 3)).astype(np.float32)
    print(f"{'engine':70s} {'edgeptq ms':>10s} {'bare ms':>10s} {'ratio':>7s}")
    for engine in args.engines:
        runner = load_runner(engine, args.threads)
        session = ort.InferenceSession(str(engine), session_options(args.threads), providers=["CPUExecutionProvider"])
        ours, bare = [], []
        for _ in range(args.rounds):
            ours.append(measure(runner.run, batch, warmup=5, iterations=args.iterations, min_duration_s=0))
            bare.append(bare_loop(session, session.get_inputs()[0].name, batch, args.iterations + 5)[5:])
        ours_ms, bare_ms = np.median(np.concatenate(ours)) * 1e3, np.median(np.concatenate(bare)) * 1e3
        print(f"{str(engine)[-70:]:70s} {ours_ms:10.4f} {bare_ms:10.4f} {ours_ms / bare_ms:7.3f}")


if __name__ == "__main__":
    main()
