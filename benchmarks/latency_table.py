"""Median latency per model and precision from a finished run, with the INT8 and FP16 speedups.

    python benchmarks/latency_table.py [RESULTS_DIR]
"""

import sys
from pathlib import Path

import pandas as pd

results = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
for table in sorted(results.glob("summary/latency.parquet")):
    latency = pd.read_parquet(table)
    accuracy = pd.read_parquet(table.with_name("accuracy.parquet"))
    size = pd.read_parquet(table.with_name("size.parquet"))
    wide = latency.pivot_table(index=["dataset", "model"], columns="precision", values="latency_median_ms")
    for precision in ("fp16", "int8"):
        if precision in wide and "fp32" in wide:
            wide[f"{precision}_speedup"] = wide["fp32"] / wide[precision]
    print(f"== {table.parent} ({', '.join(sorted(latency['device'].unique()))}): median latency per batch (ms), "
          f"batch {int(latency['batch_size'].iloc[0])}, {int(latency['threads'].iloc[0])} threads")
    print(wide.round(3).to_string())
    print("top-1 accuracy:")
    print(accuracy.pivot_table(index=["dataset", "model"], columns="precision", values="top1_accuracy").round(4).to_string())
    print("size vs fp32:")
    print(size.pivot_table(index=["dataset", "model"], columns="precision", values="size_vs_fp32").round(3).to_string())
