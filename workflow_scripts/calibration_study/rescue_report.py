"""The INT8 rescue table (model x method) and the per-model sensitivity figure of the calibration study.

Rows per model: the collapsed start variant (what is rescued), ``int8-auto`` (ours: ONNX Runtime,
sensitivity ranking + bisection + pruning) and, when enabled, ``nncf-ac`` (NNCF's
``quantize_with_accuracy_control`` on OpenVINO). Each: the test top-1 drop versus the FP32 model
(ONNX Runtime FP32, the same reference for every row) with its paired 95% bootstrap interval, float
nodes, engine MB, median latency with its interval, and the search's wall time (ours: sensitivity +
search; NNCF: its whole call, which includes its own quantization and ranking). The test split is read
here only through the final engines' prediction tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from workflow_scripts.calibration_study.variants import AUTO_VARIANT, NNCF_VARIANT
from workflow_scripts.core.registry import RESCUE_BACKEND, STUDY_BACKEND, backend as backend_entry

# Operations with weights (ONNX and OpenVINO names): a float one keeps float weights and a float GEMM.
WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Convolution", "GroupConvolution", "ConvolutionBackpropData"}


def _latency(path: Path) -> dict:
    if not path.is_file():
        return {}
    row = pd.read_parquet(path).iloc[0]
    return {k: float(row[k]) for k in ("latency_median_ms", "latency_median_ci_low_ms", "latency_median_ci_high_ms",
                                       "engine_mb") if k in row and pd.notna(row[k])}


def _size_mb(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths if p.is_file()) / 1e6


def rescue_rows(cell: dict, start_variant: str, with_nncf: bool, n_resamples: int, seed: int,
                nncf_dir: str | Path | None = None) -> pd.DataFrame:
    """The rescue rows of one model (``cell`` as in :func:`workflow_scripts.calibration_study.study.study_rows`)."""
    from workflow_scripts.calibration_study.study import correctness_of
    from workflow_scripts.measure.statistics import paired_drop

    folder = Path(cell["engine_dir"])
    cal = folder / "calibration"
    fp32 = correctness_of(pd.read_parquet(folder / "fp32_predictions.parquet"))
    sensitivity_s = float("nan")
    if (cal / "sensitivity.parquet").is_file():
        table = pd.read_parquet(cal / "sensitivity.parquet")
        if "sensitivity_s" in table:
            sensitivity_s = float(table["sensitivity_s"].iloc[0])
    entries = [(start_variant, "start (collapsed)", STUDY_BACKEND, cal / start_variant, None),
               (AUTO_VARIANT, "int8-auto (ours)", STUDY_BACKEND, cal / AUTO_VARIANT, cal / f"{AUTO_VARIANT}.json")]
    if with_nncf and nncf_dir is not None:
        ncal = Path(nncf_dir)
        entries.append((NNCF_VARIANT, "NNCF accuracy control", RESCUE_BACKEND, ncal / NNCF_VARIANT,
                        ncal / f"{NNCF_VARIANT}.json"))
    rows = []
    for variant, method, backend, stem, record_path in entries:
        correct = correctness_of(pd.read_parquet(f"{stem}_predictions.parquet"))
        drop, low, high = paired_drop(fp32, correct, n_resamples=n_resamples, seed=seed)
        latency = _latency(Path(f"{stem}_latency.parquet"))
        entry = backend_entry(backend)  # the engine file and the files beside it (OpenVINO's .bin)
        engine = [Path(f"{stem}.{ext}") for ext in (entry.suffix, *entry.companions)]
        row = {"dataset": cell["dataset"], "model": cell["model"], "method": method, "variant": variant,
               "backend": backend, "test_images": int(len(correct)), "drop_points": drop, "drop_ci_low": low,
               "drop_ci_high": high, "within_1_point": bool(high <= 1.0), "float_nodes": 0,
               "engine_mb": latency.get("engine_mb", _size_mb(*engine)),
               "latency_median_ms": latency.get("latency_median_ms", np.nan),
               "latency_ci_low_ms": latency.get("latency_median_ci_low_ms", np.nan),
               "latency_ci_high_ms": latency.get("latency_median_ci_high_ms", np.nan),
               "float_weight_ops": 0, "search_s": np.nan, "val_images": np.nan, "evaluations": np.nan,
               "quantized_ops": np.nan}
        if record_path is not None and record_path.is_file():
            record = json.loads(record_path.read_text())
            row["val_images"] = record.get("val_images", np.nan)
            if variant == AUTO_VARIANT:
                row["float_nodes"] = len(record["kept_nodes"]) + len(record.get("preset_float_nodes", []))
                row["float_weight_ops"] = sum(t in WEIGHT_OPS for t in record.get("kept_op_types", []))
                row["search_s"] = record.get("search_s", np.nan) + (sensitivity_s if np.isfinite(sensitivity_s) else 0)
                row["evaluations"] = record.get("evaluations", np.nan)
                row["quantized_ops"] = record.get("ranking_groups", np.nan)
                row["reached_target"] = bool(record.get("reached_target"))
            else:
                row["float_nodes"] = int(record.get("float_nodes", 0))
                row["float_weight_ops"] = sum(t in WEIGHT_OPS for t in record.get("reverted_types", []))
                row["search_s"] = record.get("search_s", np.nan)
                row["quantized_ops"] = record.get("quantized_operations", np.nan)
                row["reached_target"] = bool(record.get("reached_target", True))
        rows.append(row)
    return pd.DataFrame(rows)


def rescue_markdown(table: pd.DataFrame, cpu: str = "") -> str:
    """The rescue table as Markdown."""
    lines = ["# INT8 rescue: the fewest float nodes within 1 point (model x method)\n",
             "Drop = FP32 top-1 minus engine top-1 on the test split (points), 95% CI by paired bootstrap over the "
             "same images; the test split is scored once per final engine, every search step on validation only. "
             "Float nodes: ONNX nodes kept in float (int8-auto) or operations NNCF reverted to float. Search: wall "
             "time of sensitivity + search (int8-auto) or of quantize_with_accuracy_control (NNCF)."
             + (f" CPU: {cpu}." if cpu else "") + "\n",
             "| model | method | backend | drop [95% CI] | within 1 point | float nodes (with weights) | engine MB | "
             "latency ms [95% CI] | search s | val images |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        latency = (f"{r['latency_median_ms']:.3f} [{r['latency_ci_low_ms']:.3f}, {r['latency_ci_high_ms']:.3f}]"
                   if np.isfinite(r["latency_median_ms"]) else "n/a")
        search = f"{r['search_s']:.0f}" if np.isfinite(r["search_s"]) else "-"
        val = f"{int(r['val_images'])}" if np.isfinite(r["val_images"]) else "-"
        lines.append(f"| {r['model']} | {r['method']} | {r['backend']} | {r['drop_points']:+.2f} "
                     f"[{r['drop_ci_low']:+.2f}, {r['drop_ci_high']:+.2f}] | {'yes' if r['within_1_point'] else 'no'} "
                     f"| {int(r['float_nodes'])} ({int(r['float_weight_ops'])}) | {r['engine_mb']:.2f} | {latency} | {search} | {val} |")
    return "\n".join(lines) + "\n"


def plot_sensitivity(tables: list[tuple[str, pd.DataFrame, set, set]], out_png: str | Path) -> None:
    """Per model: each quantized node group's SQNR lost (dB) in network order; float-kept groups marked.

    ``tables``: (model title, sensitivity table, nodes int8-auto kept in float, nodes NNCF reverted).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(max(len(tables), 1), 1, figsize=(11, 3.2 * max(len(tables), 1)), squeeze=False)
    for ax, (title, table, ours, nncf) in zip(axes[:, 0], tables):
        ordered = table.sort_values("graph_order").reset_index(drop=True)
        # The column the ranking followed (sensitivity.rank_by).
        column = str(ordered["rank_by"].iloc[0]) if "rank_by" in ordered and len(ordered) else "degradation_db"
        x = np.arange(len(ordered))
        ax.bar(x, ordered[column], color="#9aa7b8", width=0.8, label="INT8 (sensitivity)")
        kept = np.array([bool(set(nodes) & ours) for nodes in ordered["nodes"]])
        # OpenVINO names an operation after its ONNX node, plus a suffix for split ops (Conv__4/WithoutBiases).
        reverted_ops = {name.split("/WithoutBiases")[0] for name in nncf}
        reverted = np.array([bool(set(nodes) & reverted_ops) for nodes in ordered["nodes"]])
        if kept.any():
            ax.bar(x[kept], ordered[column][kept], color="#d62728", width=0.8,
                   label=f"kept in float by int8-auto ({int(kept.sum())} groups)")
        if reverted.any():
            top = float(np.nanmax(ordered[column])) if len(ordered) else 1.0
            ax.scatter(x[reverted], np.full(reverted.sum(), top * 1.05), marker="v", color="#1f77b4",
                       label=f"reverted by NNCF ({int(reverted.sum())} matched groups)")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_title(title)
        ax.set_xlabel("quantized node groups in network order")
        ax.set_ylabel("sensitivity score (dB)" if column == "score_db" else "SQNR lost across group (dB)")
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
