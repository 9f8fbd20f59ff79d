"""The budgets (constraints) and objectives of a deployment decision: what :mod:`workflow_scripts.decision.decide`
ranks by and rejects on (the budgets and objectives are described there)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from workflow_scripts.core import registry

GROUP = ["device", "dataset", "input_size", "model"]
ENGINE = ["backend", "precision"]
PRECISION_ORDER = {p: i for i, p in enumerate(registry.PRECISIONS)}

# objective -> (column, ascending)
OBJECTIVES = {
    "latency": ("p99_ms", True),
    "p50": ("p50_ms", True),
    "throughput": ("throughput_images_per_s", False),
    "size": ("engine_mb", True),
    "accuracy": ("top1_percent", False),
    "memory": ("rss_peak_mb", True),
    "energy": ("energy_per_inference_mj", True),
}
TIE_BREAKERS = ("latency", "size", "accuracy")


@dataclass
class Budgets:
    """The constraints of a decision (None: unconstrained) and its objective."""

    p99_ms: float | None = None
    max_mb: float | None = None
    max_drop_points: float | None = None
    max_rss_mb: float | None = None
    max_energy_mj: float | None = None
    drop_bound: str = "ci_high"
    require_valid: bool = True
    objective: str = "latency"
    tie_margin: float = 0.05

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; one of {list(OBJECTIVES)}")
        if self.drop_bound not in ("ci_high", "point"):
            raise ValueError(f"drop_bound is {self.drop_bound!r}; use ci_high or point")
        for name in ("p99_ms", "max_mb", "max_drop_points", "max_rss_mb", "max_energy_mj"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"budget {name} is {value!r}; give a finite number or leave it out")
            # A drop budget may be negative (demand an improvement); a latency, size, memory or
            # energy budget at or below zero rejects every engine and is a typo.
            if value is not None and name != "max_drop_points" and value <= 0:
                raise ValueError(f"budget {name} is {value!r}; it must be greater than 0 (or left out)")
        if not (isinstance(self.tie_margin, (int, float)) and math.isfinite(self.tie_margin)
                and 0 <= self.tie_margin < 1):
            raise ValueError(f"tie_margin is {self.tie_margin!r}; give a fraction in [0, 1), e.g. 0.05")

    @classmethod
    def from_config(cls, block: dict | None) -> "Budgets":
        """Budgets from config block ``decision`` (keys as in config/schema.yaml)."""
        block = dict(block or {})
        return cls(p99_ms=block.get("p99_ms"), max_mb=block.get("max_mb"),
                   max_drop_points=block.get("max_drop_points"), max_rss_mb=block.get("max_rss_mb"),
                   max_energy_mj=block.get("max_energy_mj"), drop_bound=block.get("drop_bound", "ci_high"),
                   require_valid=bool(block.get("require_valid", True)),
                   objective=block.get("objective", "latency"), tie_margin=block.get("tie_margin", 0.05))

    def describe(self) -> str:
        """The budgets in words, one clause each."""
        parts = []
        if self.p99_ms is not None:
            parts.append(f"p99 latency <= {self.p99_ms:g} ms")
        if self.max_mb is not None:
            parts.append(f"engine size <= {self.max_mb:g} MB")
        if self.max_drop_points is not None:
            how = "upper 95% bound of the" if self.drop_bound == "ci_high" else "point estimate of the"
            parts.append(f"{how} top-1 drop vs FP32 <= {self.max_drop_points:g} points")
        if self.max_rss_mb is not None:
            parts.append(f"peak process RSS <= {self.max_rss_mb:g} MB")
        if self.max_energy_mj is not None:
            parts.append(f"energy per inference <= {self.max_energy_mj:g} mJ (where measured)")
        if self.require_valid:
            parts.append("latency run valid")
        return "; ".join(parts) or "no budgets"
