"""The ``int8-auto`` search: the fewest float nodes that bring an INT8 model within its target drop.

The search sees the model only through ``judge(kept_nodes)``, which builds the INT8 model with
``kept_nodes`` in float, scores it on the **validation** split and says whether it meets the target
(:func:`workflow_scripts.calibration_study.int8_auto.run_int8_auto` builds that judge from the validation split
alone; the test split is read once, afterwards, on the final engine, by the workflow's evaluate rule).

``ranking`` lists node groups, most sensitive first (a group is what one measured tensor stands for,
e.g. Conv + Relu fused by ONNX Runtime; :func:`workflow_scripts.calibration_study.sensitivity.ranked_groups`). Keeping
the first ``k`` groups in float is "prefix ``k``". Assuming the drop falls as more of the ranking is
kept in float (monotone), the search is:

1. ``plain``: prefix 0; done if it meets the target.
2. ``bracket``: prefixes 1, 2, 4, ... (capped at the largest prefix within ``budget`` nodes) until one
   meets the target; if even the cap does not, stop (``budget`` or ``ranking exhausted``).
3. ``bisect``: bisection between the last failing and the first meeting prefix: the smallest prefix
   ``k`` that meets the target, in about ``2 log2 k`` judged builds whatever the ranking's length.
4. ``prune``: the groups of that prefix but its last (prefix ``k - 1`` is known to fail), least
   sensitive first, go back to INT8 while the model still meets the target: in chunks of half of
   them, then quarters, ..., then one by one (:func:`prune_groups`).

With a monotone judge (a superset of a set that meets the target meets it too) the result meets the
target and no single group of it can be put back to INT8 without missing it; when the target is met
exactly when a set ``R`` of groups is in float, the result is ``R``, the minimal set. Judged sets are
cached, so no build is repeated.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

log = logging.getLogger(__name__)

PHASES = ("plain", "bracket", "bisect", "prune")


def as_groups(ranking: Sequence[str | Sequence[str]]) -> list[list[str]]:
    """Node names or groups of names, as groups."""
    return [[g] if isinstance(g, str) else list(g) for g in ranking]


def prefix_limit(groups: list[list[str]], budget: int | None) -> int:
    """The largest ``k`` whose prefix keeps at most ``budget`` nodes in float (``None``: no budget)."""
    if budget is None:
        return len(groups)
    total, k = 0, 0
    for group in groups:
        if total + len(group) > budget:
            break
        total += len(group)
        k += 1
    return k


def search_float_groups(ranking: Sequence[str | Sequence[str]], judge: Callable[[list[str]], dict | bool],
                        budget: int | None = None, prune: bool = True) -> dict:
    """Find the fewest float nodes meeting the target; see the module docstring.

    ``judge(kept)`` returns ``True``/``False`` or a dict with ``meets`` (bool) and any figures to record
    (e.g. ``val_drop_points``). Returns ``kept_nodes`` (in ranking order), ``kept_groups`` (their
    indices in the ranking), ``steps`` (one row per judged build), ``evaluations``, ``reached_target``
    and ``stop_reason`` (``target``, ``budget`` or ``ranking exhausted``); ``final_step``: the judge's
    figures for the returned set.
    """
    groups = as_groups(ranking)
    cache: dict[frozenset, dict] = {}
    steps: list[dict] = []

    def nodes_of(indices: Sequence[int]) -> list[str]:
        return [n for i in sorted(indices) for n in groups[i]]

    def meets(indices: Sequence[int], phase: str) -> bool:
        key = frozenset(indices)
        if key not in cache:
            kept = nodes_of(indices)
            verdict = judge(list(kept))
            info = dict(verdict) if isinstance(verdict, dict) else {"meets": bool(verdict)}
            info["meets"] = bool(info["meets"])
            cache[key] = info
            steps.append({"step": len(steps), "phase": phase, "float_groups": len(key), "float_nodes": len(kept),
                          **info})
            log.info("int8-auto %s: %d groups (%d nodes) in float -> %s %s", phase, len(key), len(kept),
                     "meets" if info["meets"] else "misses", {k: v for k, v in info.items() if k != "meets"})
        return cache[key]["meets"]

    def result(indices: Sequence[int], reached: bool, reason: str) -> dict:
        return {"kept_nodes": nodes_of(indices), "kept_groups": sorted(int(i) for i in indices), "steps": steps,
                "evaluations": len(steps), "reached_target": reached, "stop_reason": reason,
                "ranking_groups": len(groups), "final_step": cache[frozenset(indices)]}

    if meets([], "plain"):
        return result([], True, "target")
    cap = prefix_limit(groups, budget)
    if cap == 0:
        return result([], False, "budget" if groups else "ranking exhausted")
    # Bracket: 1, 2, 4, ... up to the cap.
    low, high, k = 0, None, 1
    while high is None:
        k = min(k, cap)
        if meets(range(k), "bracket"):
            high = k
        elif k == cap:
            reason = "budget" if cap < len(groups) else "ranking exhausted"
            return result(range(cap), False, reason)
        else:
            low, k = k, 2 * k
    # Bisect: prefix `low` fails, prefix `high` meets.
    while high - low > 1:
        mid = (low + high) // 2
        if meets(range(mid), "bisect"):
            high = mid
        else:
            low = mid
    kept = list(range(high))
    if prune:
        kept = prune_groups(kept, lambda trial: meets(trial, "prune"))
    return result(kept, True, "target")


def prune_groups(kept: list[int], meets: Callable[[list[int]], bool]) -> list[int]:
    """Put groups of ``kept`` (a meeting prefix) back to INT8 while the target still holds.

    The last group stays (the prefix without it fails). The others, least sensitive first, are tried
    in chunks: half of them at once, then quarters, ..., then one by one, so a prefix of which only
    ``r`` groups matter costs about ``2 r log2(k)`` builds rather than ``k``; the one-by-one pass at
    the end leaves no single group that could go back.
    """
    kept = list(kept)
    chunk = max(1, (len(kept) - 1) // 2)
    while kept[:-1]:
        candidates = list(reversed(kept[:-1]))
        for start in range(0, len(candidates), chunk):
            part = set(candidates[start:start + chunk])
            trial = [i for i in kept if i not in part]
            if len(trial) < len(kept) and meets(trial):
                kept = trial
        if chunk == 1:
            break
        chunk = max(1, chunk // 2)
    return kept
