"""The INT8 calibration study: calibration choices as axes, one INT8 engine per variant.

A *variant* is one combination of the study axes, named by a readable id::

    <method>-n<images>-<pc|pt>-<sym|asym>-<exclusions>

- method: ``entropy``, ``minmax`` or ``percentile<value>`` (e.g. ``percentile99.999``);
- ``n256``: calibration images, a seeded sample of the train split;
- ``pc`` per-channel or ``pt`` per-tensor weight scales;
- ``sym`` symmetric (int8) or ``asym`` asymmetric (uint8) activations;
- exclusions kept in float: ``none``, or presets joined by ``+`` (``swish``, ``squeeze_excite``,
  ``first_conv``, ``classifier``), or ``op.<OpType>`` for every node of one ONNX op type.

Example: ``entropy-n256-pc-asym-none`` is the default INT8 build; ``minmax-n64-pt-asym-swish+classifier``
is min-max calibration on 64 images, per-tensor weights, with swish/hard-swish and the classifier in float.
``int8-auto`` is the mixed-precision model of :mod:`workflow_scripts.sensitivity`.

Every result row carries the axes as columns (``variant``, ``method``, ``percentile``, ``num_images``,
``per_channel``, ``symmetric_activations``, ``exclude``), so tables can be grouped by any of them.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .errors import ConfigError

log = logging.getLogger(__name__)

METHODS = ("entropy", "minmax", "percentile")
PRESETS = ("swish", "squeeze_excite", "first_conv", "classifier")
AUTO_VARIANT = "int8-auto"
# Wildcard regex of a variant id (Snakemake constraint); int8-auto is matched separately.
VARIANT_REGEX = r"(entropy|minmax|percentile[0-9]+(\.[0-9]+)?)-n[0-9]+-(pc|pt)-(sym|asym)-[A-Za-z0-9_.+]+"
_ID = re.compile(r"^(?P<method>entropy|minmax|percentile(?P<pct>[0-9]+(\.[0-9]+)?))-n(?P<n>[0-9]+)-"
                 r"(?P<w>pc|pt)-(?P<a>sym|asym)-(?P<ex>[A-Za-z0-9_.+]+)$")
_OP_TOKEN = re.compile(r"^op\.[A-Za-z][A-Za-z0-9]*$")


@dataclass(frozen=True)
class Variant:
    """One point of the study: calibration method (and percentile), images, weight and activation scheme, exclusions."""

    method: str = "entropy"
    num_images: int = 256
    per_channel: bool = True
    symmetric: bool = False
    exclude: tuple[str, ...] = ()
    percentile: float | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"calibration method {self.method!r} is not one of {METHODS}")
        if self.method == "percentile" and (self.percentile is None or not 90 <= self.percentile <= 100):
            raise ConfigError(f"method percentile needs a percentile in [90, 100], got {self.percentile!r}")
        if self.num_images < 1:
            raise ConfigError(f"a variant needs at least 1 calibration image, got {self.num_images}")
        for token in self.exclude:
            if token not in PRESETS and not _OP_TOKEN.match(token):
                raise ConfigError(
                    f"exclusion {token!r} is neither a preset ({', '.join(PRESETS)}) nor 'op.<OpType>' "
                    "(e.g. op.Concat); use 'none' to keep nothing in float"
                )

    @property
    def id(self) -> str:
        """The readable variant id (see module docstring)."""
        method = self.method if self.method != "percentile" else f"percentile{format_number(self.percentile)}"
        exclude = "+".join(self.exclude) if self.exclude else "none"
        return (f"{method}-n{self.num_images}-{'pc' if self.per_channel else 'pt'}-"
                f"{'sym' if self.symmetric else 'asym'}-{exclude}")

    def labels(self) -> dict:
        """The axes as result-table columns."""
        return {
            "variant": self.id, "method": self.method,
            "percentile": float(self.percentile) if self.percentile is not None else float("nan"),
            "num_images": int(self.num_images), "per_channel": bool(self.per_channel),
            "symmetric_activations": bool(self.symmetric), "exclude": "+".join(self.exclude) or "none",
        }


def format_number(value: float) -> str:
    """99.999 -> '99.999', 100.0 -> '100' (no trailing zeros, no exponent)."""
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return text


def parse_variant(variant_id: str) -> Variant:
    """The Variant a readable id names; a clear error for a malformed id."""
    match = _ID.match(variant_id)
    if not match:
        raise ConfigError(
            f"calibration variant {variant_id!r} is not '<method>-n<images>-<pc|pt>-<sym|asym>-<exclusions>', "
            "e.g. entropy-n256-pc-asym-none or percentile99.99-n64-pt-sym-swish+classifier"
        )
    method = "percentile" if match["pct"] else match["method"]
    exclude = () if match["ex"] == "none" else tuple(match["ex"].split("+"))
    if "none" in exclude or len(set(exclude)) != len(exclude) or "" in exclude:
        raise ConfigError(f"calibration variant {variant_id!r}: exclusions must be 'none' or distinct presets joined by '+'")
    variant = Variant(method=method, num_images=int(match["n"]), per_channel=match["w"] == "pc",
                      symmetric=match["a"] == "sym", exclude=exclude,
                      percentile=float(match["pct"]) if match["pct"] else None)
    if variant.id != variant_id:
        raise ConfigError(f"calibration variant {variant_id!r} is not in canonical form; write it as {variant.id!r}")
    return variant


def _exclusion_tokens(entry: str) -> tuple[str, ...]:
    return () if entry in ("none", "") else tuple(entry.split("+"))


def expand_variants(study: dict) -> list[str]:
    """Variant ids of the study config: the product of the axes, then the extra ``variants``, no repeats."""
    methods = []
    for method in study.get("methods", ["entropy"]):
        if method == "percentile":
            methods += [("percentile", float(p)) for p in study.get("percentiles", [99.999])]
        else:
            methods.append((method, None))
    ids = []
    for (method, pct), n, pc, sym, ex in itertools.product(
            methods, study.get("num_images", [256]), study.get("per_channel", [True]),
            study.get("symmetric_activations", [False]), study.get("exclude", ["none"])):
        ids.append(Variant(method, int(n), bool(pc), bool(sym), _exclusion_tokens(ex), pct).id)
    for extra in study.get("variants", []):
        ids.append(parse_variant(extra).id)
    baseline = study.get("baseline")
    if baseline:
        ids.append(parse_variant(baseline).id)
    return list(dict.fromkeys(ids))


def check_num_images(variant: Variant, train_images: int) -> None:
    """A variant may not ask for more calibration images than the train split holds."""
    if variant.num_images > train_images:
        raise ConfigError(
            f"calibration variant {variant.id} asks for {variant.num_images} calibration images but the train "
            f"split has only {train_images}; lower config key 'calibration_study.num_images' (or the n<images> "
            f"of that entry in 'calibration_study.variants') to at most {train_images}"
        )


# --- exclusion presets, resolved on the model quantize_static sees (after quant_pre_process) ----------

def prepare_model(onnx_path: str | Path, out: str | Path) -> Path:
    """The pre-processed model the ONNX Runtime backend quantizes (same call, so node names match)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(onnx_path), str(out), skip_symbolic_shape=False)
    return Path(out)


class _Graph:
    """Producer/consumer maps of an ONNX graph."""

    def __init__(self, model):
        self.nodes = list(model.graph.node)
        self.constants = {t.name for t in model.graph.initializer}
        self.constants |= {o for n in self.nodes if n.op_type == "Constant" for o in n.output}
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def dynamic_inputs(self, node) -> list[str]:
        return [i for i in node.input if i and i not in self.constants]


_ELEMENTWISE = {"Sigmoid", "HardSigmoid", "Add", "Clip", "Relu", "Mul", "Div", "Sub"}


def _swish_nodes(graph: _Graph) -> set[str]:
    """x * sigmoid(x), x * hard_sigmoid(x), and hard-swish decomposed as x * clip(x + 3, 0, 6) / 6."""
    found = set()
    for node in graph.nodes:
        if node.op_type != "Mul":
            continue
        inputs = graph.dynamic_inputs(node)
        if len(inputs) != 2:
            continue
        for x, gate in (inputs, inputs[::-1]):
            chain, tensor = [], gate
            for _ in range(4):
                producer = graph.producer.get(tensor)
                if producer is None or producer.op_type not in _ELEMENTWISE:
                    break
                dynamic = graph.dynamic_inputs(producer)
                if len(dynamic) != 1:
                    break
                chain.append(producer)
                if dynamic[0] == x:
                    # The gate must squash: sigmoid, hard sigmoid, or the clip of hard-swish.
                    if any(n.op_type in ("Sigmoid", "HardSigmoid", "Clip") for n in chain):
                        found.update([n.name for n in chain] + [node.name])
                    break
                tensor = dynamic[0]
    return found


def _squeeze_excite_nodes(graph: _Graph) -> set[str]:
    """From each GlobalAveragePool of X to the Mul that scales X by the gate: the whole SE branch."""
    found = set()
    for pool in graph.nodes:
        if pool.op_type not in ("GlobalAveragePool", "ReduceMean"):
            continue
        source = pool.input[0]
        branch, frontier = {pool.name}, list(pool.output)
        for _ in range(12):
            following = [c for t in frontier for c in graph.consumers.get(t, [])]
            closing = [c for c in following if c.op_type == "Mul" and source in c.input]
            if closing:
                found |= branch | {c.name for c in closing}
                break
            if not following:
                break
            branch |= {c.name for c in following}
            frontier = [o for c in following for o in c.output]
    return found


def _first_conv(graph: _Graph) -> set[str]:
    first = next((n for n in graph.nodes if n.op_type == "Conv"), None)
    return {first.name} if first is not None else set()


def _classifier(graph: _Graph) -> set[str]:
    last = [n for n in graph.nodes if n.op_type in ("Gemm", "MatMul")]
    return {last[-1].name} if last else set()


PRESET_FUNCTIONS = {"swish": _swish_nodes, "squeeze_excite": _squeeze_excite_nodes,
                    "first_conv": _first_conv, "classifier": _classifier}


def resolve_exclusions(model, tokens: Iterable[str]) -> tuple[list[str], list[str]]:
    """(op types, node names) to keep in float for the exclusion tokens on ``model`` (an onnx.ModelProto)."""
    graph = _Graph(model)
    op_types, nodes = [], set()
    for token in tokens:
        if token.startswith("op."):
            op_types.append(token[3:])
        else:
            matched = PRESET_FUNCTIONS[token](graph)
            if not matched:
                log.warning("exclusion preset %s matches no node of this model", token)
            nodes |= matched
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    return sorted(set(op_types)), sorted(nodes, key=order.get)


# --- building one variant ---------------------------------------------------------------------------

def train_split_size(data_dir: str | Path) -> int:
    from .data_io import open_split

    return len(open_split(data_dir, "train")[1])


def variant_options(variant: Variant, exclude_op_types: list[str], exclude_nodes: list[str], batch_size: int) -> dict:
    """The calibration/backend options the ONNX Runtime INT8 build reads for ``variant``."""
    return {
        "method": variant.method, "percentile": variant.percentile if variant.percentile is not None else 99.999,
        "num_images": variant.num_images, "per_channel": variant.per_channel, "batch_size": batch_size,
        "symmetric_activations": variant.symmetric, "exclude_op_types": exclude_op_types,
        "exclude_nodes": exclude_nodes,
    }


def build_variant(onnx_path: str | Path, engine_path: str | Path, variant_id: str, data_dir: str | Path,
                  batch_size: int, build_table: str | Path, resources_table: str | Path,
                  calibration_json: str | Path, calibration_cache: str | Path, float_nodes_json: str | Path,
                  monitor_interval_s: float, seed: int, labels: dict, provenance: dict) -> pd.DataFrame:
    """Build one variant's INT8 engine with the workflow's timed INT8 build; add the axes to its build row."""
    import tempfile

    import onnx

    from .artifacts import write_parquet, write_text
    from .engine import build_engine_benchmark

    variant = parse_variant(variant_id)
    check_num_images(variant, train_split_size(data_dir))
    op_types, nodes = [], []
    if variant.exclude:
        with tempfile.TemporaryDirectory(prefix="edgeptq-prep-", dir=Path(engine_path).parent) as tmp:
            prepared = prepare_model(onnx_path, Path(tmp) / "prepared.onnx")
            op_types, nodes = resolve_exclusions(onnx.load(str(prepared), load_external_data=False), variant.exclude)
    log.info("variant %s: %d nodes and op types %s kept in float", variant.id, len(nodes), op_types)
    options = variant_options(variant, op_types, nodes, batch_size)
    runs = build_engine_benchmark("onnxruntime", onnx_path, engine_path, "int8", data_dir, options, {},
                                  build_table, resources_table, calibration_json, calibration_cache,
                                  warmup=0, repeats=1, monitor_interval_s=monitor_interval_s, seed=seed,
                                  provenance=provenance)
    for key, value in {**labels, "float_nodes": len(nodes), "float_op_types": ",".join(op_types)}.items():
        runs[key] = value
    write_parquet(runs, build_table)
    write_text(json.dumps({"variant": variant.id, "exclude_op_types": op_types, "exclude_nodes": nodes}, indent=2),
               float_nodes_json)
    return runs


def variant_labels(variant_id: str, dataset: str, model: str, size: int | str) -> dict:
    """Columns every row of a variant's tables carries (accuracy, predictions, latency)."""
    base = {"dataset": dataset, "model": model, "input_size": int(size), "precision": "int8"}
    if variant_id == AUTO_VARIANT:
        return {**base, "variant": AUTO_VARIANT, "method": "auto", "percentile": float("nan"), "num_images": 0,
                "per_channel": True, "symmetric_activations": False, "exclude": "auto"}
    return {**base, **parse_variant(variant_id).labels()}


# --- accuracy helpers -------------------------------------------------------------------------------

def split_correctness(runner, data_dir: str | Path, split: str, batch_size: int) -> np.ndarray:
    """Per-image top-1 correctness (0/1) of ``runner`` on one split, streamed in batches."""
    from .data_io import iter_batches

    correct = []
    for images, labels in iter_batches(data_dir, split, batch_size):
        scores = np.asarray(runner.run(images), dtype=np.float64)
        ok = np.isfinite(scores).all(axis=1) & (np.argmax(np.nan_to_num(scores, nan=-np.inf), axis=1) == labels)
        correct.append(ok)
    return np.concatenate(correct).astype(float) if correct else np.zeros(0)


def _rng_kwargs(seed: int) -> dict:
    """The seeding argument scipy.stats.bootstrap accepts (``rng`` from SciPy 1.15, ``random_state`` before)."""
    import inspect

    from scipy import stats

    key = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    return {key: np.random.default_rng(seed)}


def paired_drop(reference_correct, other_correct, n_resamples: int = 2000, seed: int = 0,
                confidence: float = 0.95) -> tuple[float, float, float]:
    """Top-1 drop in points (reference - other) with a paired bootstrap CI over the same images.

    ``scipy.stats.bootstrap(..., paired=True)``, percentile method (BCa is NaN for engines that agree
    on every image). A zero-width interval means the two agree on every image.
    """
    from scipy import stats

    a = np.asarray(reference_correct, dtype=float)
    b = np.asarray(other_correct, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    drop = 100.0 * float(a.mean() - b.mean())
    if len(a) < 2:
        return drop, float("nan"), float("nan")
    if np.array_equal(a, b):
        return drop, 0.0, 0.0
    result = stats.bootstrap((a, b), lambda x, y, axis=-1: 100.0 * (x.mean(axis=axis) - y.mean(axis=axis)),
                             paired=True, vectorized=True, n_resamples=n_resamples, confidence_level=confidence,
                             method="percentile", **_rng_kwargs(seed))
    return drop, float(result.confidence_interval.low), float(result.confidence_interval.high)


def correctness_of(predictions: pd.DataFrame) -> np.ndarray:
    """0/1 top-1 correctness per image, ordered by image_index."""
    frame = predictions.sort_values("image_index")
    return (frame["prediction"].to_numpy() == frame["label"].to_numpy()).astype(float)


# --- the study summary: one Parquet, the best configuration per model, figures ----------------------

def _read(path) -> pd.DataFrame | None:
    return pd.read_parquet(path) if path and Path(path).is_file() else None


def _latency_ms(path) -> float:
    frame = _read(path)
    return float(frame["latency_median_ms"].iloc[0]) if frame is not None else float("nan")


def study_rows(cell: dict, variants: list[str], with_auto: bool, with_fp16: bool, n_resamples: int,
               seed: int) -> pd.DataFrame:
    """One row per engine of one model: fp16, every variant and int8-auto, each with its paired drop vs FP32.

    ``cell`` names ``dataset``, ``model``, ``input_size`` and ``engine_dir`` (the model's engine folder).
    """
    folder = Path(cell["engine_dir"])
    fp32 = correctness_of(pd.read_parquet(folder / "fp32_predictions.parquet"))
    fp32_latency = _latency_ms(folder / "fp32_latency.parquet")
    engines = [("fp16", folder / "fp16")] if with_fp16 else []
    engines += [(v, folder / "calibration" / v) for v in variants]
    if with_auto:
        engines.append((AUTO_VARIANT, folder / "calibration" / AUTO_VARIANT))
    rows = []
    for name, stem in engines:
        predictions = pd.read_parquet(f"{stem}_predictions.parquet")
        correct = correctness_of(predictions)
        drop, low, high = paired_drop(fp32, correct, n_resamples=n_resamples, seed=seed)
        labels = ({"variant": "fp16", "method": "", "percentile": float("nan"), "num_images": 0, "per_channel": False,
                   "symmetric_activations": False, "exclude": "", "precision": "fp16"}
                  if name == "fp16" else {k: v for k, v in variant_labels(name, cell["dataset"], cell["model"],
                                                                            cell["input_size"]).items()})
        build = _read(f"{stem}_build.parquet") if name != "fp16" else None
        latency = _latency_ms(f"{stem}_latency.parquet")
        row = {"dataset": cell["dataset"], "model": cell["model"], "input_size": int(cell["input_size"]), **labels,
               "images": int(len(correct)), "fp32_top1": float(fp32.mean()), "top1": float(correct.mean()),
               "drop_points": drop, "drop_ci_low": low, "drop_ci_high": high,
               "flipped_images": int((fp32 != correct).sum()),
               "latency_median_ms": latency, "fp32_latency_median_ms": fp32_latency,
               "latency_vs_fp32": latency / fp32_latency if fp32_latency else float("nan"),
               "float_nodes": int(build["float_nodes"].iloc[0]) if build is not None and "float_nodes" in build else 0,
               "build_s": float(build["duration_s"].iloc[-1]) if build is not None and "duration_s" in build else float("nan")}
        if name == AUTO_VARIANT:
            record = json.loads((folder / "calibration" / f"{AUTO_VARIANT}.json").read_text())
            row["float_nodes"] = len(record["kept_nodes"]) + len(record.get("preset_float_nodes", []))
            row["auto_baseline"] = record["baseline_variant"]
            row["auto_reached_target"] = bool(record["reached_target"])
            row["auto_val_drop_points"] = float(record["steps"][-1]["val_drop_points"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    baseline = frame[frame["variant"] == cell.get("baseline")]
    base_ms = float(baseline["latency_median_ms"].iloc[0]) if len(baseline) else float("nan")
    frame["latency_vs_baseline_int8"] = frame["latency_median_ms"] / base_ms
    return frame


def best_per_model(study: pd.DataFrame, target_points: float) -> pd.DataFrame:
    """Per model, the INT8 engine with the smallest drop; ties: fewest float nodes, then lowest latency."""
    int8 = study[study["precision"] == "int8"]
    picks = []
    for _, group in int8.groupby(["dataset", "model"], sort=True):
        ordered = group.assign(_drop=group["drop_points"].round(6)).sort_values(
            ["_drop", "float_nodes", "latency_median_ms"], kind="stable")
        picks.append(ordered.iloc[0].drop(labels="_drop"))
    best = pd.DataFrame(picks).reset_index(drop=True)
    if len(best):
        best["within_target"] = best["drop_points"] <= target_points
    return best


def _markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(no rows)\n"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame.iterrows():
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def best_markdown(study: pd.DataFrame, best: pd.DataFrame, int8_target: float, fp16_target: float) -> str:
    """The best configuration per model, and FP16's drop, against the targets."""
    text = [f"# Best INT8 configuration per model (target: INT8 drop <= {int8_target:g} point, "
            f"FP16 drop <= {fp16_target:g} point)\n",
            "Drop = FP32 top-1 minus engine top-1 on the test split, in points; 95% CI: paired bootstrap "
            "over the same test images. Best = smallest drop, then fewest float nodes, then lowest latency.\n"]
    rows = []
    for _, pick in best.iterrows():
        fp16 = study[(study["model"] == pick["model"]) & (study["dataset"] == pick["dataset"])
                     & (study["precision"] == "fp16")]
        fp16_txt = (f"{fp16['drop_points'].iloc[0]:+.2f} [{fp16['drop_ci_low'].iloc[0]:+.2f}, "
                    f"{fp16['drop_ci_high'].iloc[0]:+.2f}]" if len(fp16) else "n/a")
        fp16_ok = bool(len(fp16)) and fp16["drop_points"].iloc[0] <= fp16_target
        rows.append({"dataset": pick["dataset"], "model": pick["model"], "best INT8": pick["variant"],
                     "images": int(pick["images"]), "FP32 top-1": f"{100 * pick['fp32_top1']:.2f}",
                     "INT8 drop [95% CI]": f"{pick['drop_points']:+.2f} [{pick['drop_ci_low']:+.2f}, "
                                           f"{pick['drop_ci_high']:+.2f}]",
                     "INT8 within target": "yes" if pick["drop_points"] <= int8_target else "no",
                     "float nodes": int(pick["float_nodes"]),
                     "latency vs FP32": f"{pick['latency_vs_fp32']:.2f}",
                     "FP16 drop [95% CI]": fp16_txt, "FP16 within target": "yes" if fp16_ok else "no"})
    text.append(_markdown(pd.DataFrame(rows)))
    return "\n".join(text)


def plot_study(study: pd.DataFrame, drop_png: str | Path, fallback_png: str | Path) -> None:
    """Figures: drop vs calibration method and size per model; the latency cost of each float fallback."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plain = study[(study["precision"] == "int8") & (study["exclude"] == "none")]
    models = sorted(study["model"].unique())
    fig, axes = plt.subplots(1, max(len(models), 1), figsize=(5 * max(len(models), 1), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = plain[plain["model"] == model]
        for (method, pct, pc, sym), group in rows.groupby(
                ["method", "percentile", "per_channel", "symmetric_activations"], dropna=False):
            group = group.sort_values("num_images")
            label = (method if method != "percentile" else f"percentile {format_number(pct)}")
            label += f", {'per-channel' if pc else 'per-tensor'}" + (", sym" if sym else "")
            err = np.vstack([group["drop_points"] - group["drop_ci_low"], group["drop_ci_high"] - group["drop_points"]])
            ax.errorbar(group["num_images"], group["drop_points"], yerr=np.clip(err, 0, None), marker="o",
                        capsize=3, label=label)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_xscale("log", base=2)
        ax.set_title(model)
        ax.set_xlabel("calibration images")
        ax.set_ylabel("top-1 drop vs FP32 (points, 95% CI)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(drop_png, dpi=120)
    plt.close(fig)

    int8 = study[study["precision"] == "int8"]
    fig, axes = plt.subplots(1, max(len(models), 1), figsize=(5 * max(len(models), 1), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = int8[(int8["model"] == model) & ((int8["exclude"] != "none") | (int8["variant"] == AUTO_VARIANT)
                                                | (int8["float_nodes"] == 0))]
        rows = rows.sort_values("float_nodes")
        ax.scatter(rows["float_nodes"], rows["latency_vs_baseline_int8"], c=rows["drop_points"], cmap="viridis")
        for _, row in rows[(rows["float_nodes"] > 0)].iterrows():
            ax.annotate(row["exclude"] if row["variant"] != AUTO_VARIANT else AUTO_VARIANT,
                        (row["float_nodes"], row["latency_vs_baseline_int8"]), fontsize=7)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_title(model)
        ax.set_xlabel("nodes kept in float")
        ax.set_ylabel("median latency / plain INT8 baseline")
    fig.tight_layout()
    fig.savefig(fallback_png, dpi=120)
    plt.close(fig)


def summarize_study(cells: list[dict], variants: list[str], with_auto: bool, with_fp16: bool,
                    sensitivity_tables: list[str], int8_target: float, fp16_target: float, top_k: int,
                    n_resamples: int, seed: int, out: dict) -> pd.DataFrame:
    """Write the study Parquet, the best-configuration Markdown, the worst-layer tables and the figures."""
    from .artifacts import atomic_path, write_parquet, write_text

    study = pd.concat([study_rows(c, variants, with_auto, with_fp16, n_resamples, seed) for c in cells],
                      ignore_index=True)
    study["target_drop_points"] = np.where(study["precision"] == "fp16", fp16_target, int8_target)
    study["within_target"] = study["drop_points"] <= study["target_drop_points"]
    write_parquet(study, out["study"])
    best = best_per_model(study, int8_target)
    write_text(best_markdown(study, best, int8_target, fp16_target), out["best"])
    worst = [pd.read_parquet(p).sort_values("rank").head(top_k) for p in sensitivity_tables]
    worst = pd.concat(worst, ignore_index=True) if worst else pd.DataFrame()
    write_parquet(worst, out["sensitivity"])
    lines = [f"# Worst {top_k} layers per model (SQNR lost across the node, dB; higher = more sensitive)\n"]
    for (dataset, model), group in (worst.groupby(["dataset", "model"]) if len(worst) else []):
        lines.append(f"## {model} on {dataset}\n")
        lines.append(_markdown(group[["rank", "node", "op_type", "group_size", "degradation_db", "xmodel_sqnr_db"]]))
    write_text("\n".join(lines), out["sensitivity_md"])
    with atomic_path(out["drop_figure"]) as drop_tmp, atomic_path(out["fallback_figure"]) as fb_tmp:
        plot_study(study, drop_tmp, fb_tmp)
    return study


def study_cells(config: dict, results: str, device: str, backend: str, baseline: str) -> list[dict]:
    """The study summary's (dataset, model) cells with their engine folders."""
    from .paths import engine_dir

    size = int(config["input_size"])
    return [{"dataset": dataset, "model": model, "input_size": size, "baseline": baseline,
             "engine_dir": engine_dir(results, device, backend, dataset, size, model)}
            for dataset in config["datasets"] for model in config["models"]]
