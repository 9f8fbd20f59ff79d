"""The latency runoff's OpenVINO loads with and without the per-job compile cache (issue 29).

The runoff loads every engine fresh in each round; inside ``compile_cache`` a load after the job's first
imports the compiled model instead of compiling again. Per IR: the median over 6 interleaved rounds of
load + first run (where the model compiles), compiled afresh and from the cache, and their ratio by round.

    python benchmarks/openvino_compile_cache.py RESULTS/DEVICE/openvino/digits_32px
"""
import time, tempfile, numpy as np, sys
from workflow_scripts.backends import openvino as ovb
R = sys.argv[1]
x = np.zeros((1, 32, 32, 3), np.float32)
def load_first(path):
    t = time.perf_counter(); r = ovb.OpenVINORunner(path, 2); r.run(x); r.close(); return time.perf_counter() - t
for model in ("DenseNet169", "MobileNetV3Small"):
    for prec in ("fp32", "int8"):
        path = f"{R}/{model}/{prec}.xml"; plain, cached = [], []
        with tempfile.TemporaryDirectory() as d:
            with ovb.compile_cache(d):
                load_first(path)  # the first load of a job compiles and fills the cache
            for r in range(6):
                pair = [("p", plain), ("c", cached)]
                for kind, out in (pair if r % 2 == 0 else pair[::-1]):
                    if kind == "c":
                        with ovb.compile_cache(d):
                            out.append(load_first(path))
                    else:
                        out.append(load_first(path))
        ratio = np.array(cached) / np.array(plain)
        print(f"{model} {prec}: load + first run {np.median(plain):.3f} s compiled, {np.median(cached):.3f} s from the cache; "
              f"ratio {np.median(ratio):.2f} ({ratio.min():.2f}-{ratio.max():.2f}, 6 rounds)")
