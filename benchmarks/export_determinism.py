"""Deterministic export: plain tf2onnx versus the workflow's canonical conversion, side by side.

Converts one trained ``model.keras`` repeatedly in this process, alternating plain tf2onnx output
(``canonical=False``) and the workflow's deterministic, canonical conversion (the default), and
reports per mode the median conversion time and how many distinct files the repeats produced.

    python benchmarks/export_determinism.py results/models/digits_32px/MobileNetV3Small/model.keras --repeats 5
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("keras_model", type=Path)
    parser.add_argument("--repeats", type=int, default=5, help="conversions per mode (interleaved)")
    parser.add_argument("--opset", type=int, default=17)
    args = parser.parse_args(argv)

    import keras

    from workflow_scripts.stages.export import convert_to_onnx

    model = keras.models.load_model(args.keras_model, safe_mode=True)
    times: dict[bool, list[float]] = {False: [], True: []}
    digests: dict[bool, set[str]] = {False: set(), True: set()}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            # Alternate the order so neither mode always runs first (warm caches, machine load).
            for canonical in (False, True) if repeat % 2 == 0 else (True, False):
                path = Path(tmp) / f"{canonical}.onnx"
                start = time.perf_counter()
                convert_to_onnx(model, path, args.opset, canonical=canonical)
                times[canonical].append(time.perf_counter() - start)
                digests[canonical].add(hashlib.sha256(path.read_bytes()).hexdigest())
    for canonical in (False, True):
        print(f"{'canonical' if canonical else 'plain tf2onnx'}: median {statistics.median(times[canonical]):.3f} s "
              f"over {args.repeats} conversions, {len(digests[canonical])} distinct file(s)")
    print(f"time ratio canonical / plain: {statistics.median(times[True]) / statistics.median(times[False]):.3f}")


if __name__ == "__main__":
    main()
