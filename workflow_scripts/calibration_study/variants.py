"""Calibration study variants: the readable ids, their axes, the study's expansion and labels.

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
``int8-auto`` is the mixed-precision model of :mod:`workflow_scripts.calibration_study.sensitivity`.

Every result row carries the axes as columns (``variant``, ``method``, ``percentile``, ``num_images``,
``per_channel``, ``symmetric_activations``, ``exclude``), so tables can be grouped by any of them.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from workflow_scripts.core.errors import ConfigError

METHODS = ("entropy", "minmax", "percentile")
PRESETS = ("swish", "squeeze_excite", "first_conv", "classifier")
AUTO_VARIANT = "int8-auto"
# The same rescue by NNCF's quantize_with_accuracy_control on OpenVINO (workflow_scripts/calibration_study/nncf_rescue.py).
NNCF_VARIANT = "nncf-ac"
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


def variant_options(variant: Variant, exclude_op_types: list[str], exclude_nodes: list[str], batch_size: int) -> dict:
    """The calibration/backend options the ONNX Runtime INT8 build reads for ``variant``."""
    return {
        "method": variant.method, "percentile": variant.percentile if variant.percentile is not None else 99.999,
        "num_images": variant.num_images, "per_channel": variant.per_channel, "batch_size": batch_size,
        "symmetric_activations": variant.symmetric, "exclude_op_types": exclude_op_types,
        "exclude_nodes": exclude_nodes,
    }


def variant_labels(variant_id: str, dataset: str, model: str, size: int | str) -> dict:
    """Columns every row of a variant's tables carries (accuracy, predictions, latency)."""
    base = {"dataset": dataset, "model": model, "input_size": int(size), "precision": "int8"}
    if variant_id in (AUTO_VARIANT, NNCF_VARIANT):
        return {**base, "variant": variant_id, "method": "auto" if variant_id == AUTO_VARIANT else "nncf",
                "percentile": float("nan"), "num_images": 0, "per_channel": True, "symmetric_activations": False,
                "exclude": "auto"}
    return {**base, **parse_variant(variant_id).labels()}


def study_cells(config: dict, results: str, device: str, backend: str, baseline: str,
                nncf_backend: str | None = None) -> list[dict]:
    """The study summary's (dataset, model) cells with their engine folders (and NNCF's calibration folder)."""
    from workflow_scripts.core.paths import engine_dir

    size = int(config["input_size"])
    cells = []
    for dataset in config["datasets"]:
        for model in config["models"]:
            cell = {"dataset": dataset, "model": model, "input_size": size, "baseline": baseline,
                    "engine_dir": engine_dir(results, device, backend, dataset, size, model)}
            if nncf_backend:
                cell["nncf_dir"] = f"{engine_dir(results, device, nncf_backend, dataset, size, model)}/calibration"
            cells.append(cell)
    return cells
