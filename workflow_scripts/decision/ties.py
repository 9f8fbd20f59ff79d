"""Ties within measurement noise: which candidates of a decision cannot be told apart at 95%.

For the latency objectives (``latency``: p99, ``p50``: median) the best candidate by point value is
compared with every other feasible one:

- **paired by round** where the runoff (:mod:`workflow_scripts.stages.runoff`) measured both, interleaved:
  the ratio other / best of the round values, round by round; its median over rounds has a
  distribution-free 95% interval (order statistics; with 6 rounds [min, max], 96.9%). The other is
  *slower* only when that interval lies wholly above 1, i.e. it was slower in every round of 6 (a
  sign test, p = 2 / 2^6 = 0.031);
- **intervals** otherwise (no runoff, or fewer rounds than a 95% interval needs): slower only when its
  interval lies wholly above the best's.

A difference also has to exceed ``tie_margin`` (a fraction, config key ``decision.tie_margin``) of the
best's value: differences smaller than that are below what reruns of the same engine reproduce.
A candidate shown slower, paired by round, than *any* other feasible candidate (not only the best by
point value) is out: it cannot be the fastest, whichever of two tied engines had the lower point value
in this run. Those extra comparisons are made at a Bonferroni level (:func:`secondary_confidence`:
5% shared over the other candidates, or slower in every round where the rounds cannot reach it), so
that they do not leave a truly tied engine out more often.
Among the tie set the other latency percentile speaks first (the median for a p99 objective, the p99 for a
median one): a member shown slower on it than another member, by the same tests at the Bonferroni level
over the tie set, does not get picked, since equal on the objective it is the slower engine all the same.
Then the next objectives (size, then accuracy) pick, and the decision says so. Seen on the quickstart's
MobileNetV3Small: LiteRT INT8's p99 ties FP16's when the VM is in a slow phase and is 1.3x it otherwise,
while its median is 1.1-1.4x FP16's in every round; by size alone INT8 won whenever it tied, so the answer
followed the machine's phase.

The runoff (:func:`finalists`) uses the same paired test to retire engines after its base rounds, so
that the finalists get more and longer rounds (docs/decision.md).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from workflow_scripts.measure import statistics as st
# The paired test by round, also used by the runoff (stages, below decision) to retire engines.
from workflow_scripts.measure.statistics import paired_best, paired_slower

RUNOFF_METRIC = st.RUNOFF_METRIC
POINT = {"latency": ("p99_ms", "p99_ci_low_ms", "p99_ci_high_ms"), "p50": ("p50_ms", "p50_ci_low_ms", "p50_ci_high_ms")}
NEXT = (("engine_mb", True, "size", "MB"), ("top1_percent", False, "accuracy", "% top-1"))
# The other latency percentile of each latency objective, which narrows a tie before NEXT picks.
OTHER_PERCENTILE = {"latency": "p50", "p50": "latency"}
_PERCENTILE_WORDS = {"latency": "p99", "p50": "median"}


class Tie(NamedTuple):
    """What :func:`break_ties` decided for one group: the tie set (index labels; the first ranked alone when
    there is no tie), the chosen label, the note ('' without a tie), what picked it ('' without a tie) and
    the members the other latency percentile left out, each with why."""

    tied: list
    chosen: object
    note: str
    broken_by: str
    left_out: dict


def _group_rows(runoff: pd.DataFrame, group: dict) -> pd.DataFrame:
    """The runoff rows of one (device, dataset, input size, model) group (keys the table lacks are ignored)."""
    mask = pd.Series(True, index=runoff.index)
    for key, value in group.items():
        if key in runoff.columns:
            mask &= runoff[key].astype(str) == str(value)
    return runoff[mask]


def _rounds_of(runoff: pd.DataFrame | None, group: dict, column: str) -> pd.DataFrame:
    if runoff is None or not len(runoff) or column not in runoff.columns:
        return pd.DataFrame()
    part = _group_rows(runoff, group)
    if not len(part):
        return pd.DataFrame()
    return st.by_round(part, column)


def _rounds_text(labels: list) -> str:
    names = [str(int(r) + 1) for r in labels]  # rows count rounds from 0; people from 1
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def machine_note(runoff: pd.DataFrame | None, group: dict) -> str:
    """'' or what a slow period of the machine did to the group's runoff: the rounds in which every engine
    ran at least :data:`statistics.SLOW_ROUND_FACTOR` times its median over rounds (the median over engines),
    how much slower, and the steal and other processes' CPU seen in them (none seen: the host, out of the
    VM's sight). Paired by round, a slowdown common to all engines cancels; a tail it changes does not."""
    medians = _rounds_of(runoff, group, "latency_median_ms")
    if len(medians.columns) < 2:
        return ""
    slow = st.slow_rounds(medians)
    if not slow:
        return ""
    rows = _group_rows(runoff, group)
    in_slow = rows[rows["round"].isin(list(slow))]
    steal = pd.to_numeric(in_slow.get("cpu_steal_percent"), errors="coerce").mean()
    other = pd.to_numeric(in_slow.get("other_processes_cores"), errors="coerce").mean()
    seen = (f"steal {steal:.0f}%, other processes {other:.1f} cores" if np.isfinite(steal) and np.isfinite(other)
            else "steal and other load not recorded")
    if np.isfinite(steal) and np.isfinite(other) and steal < 1 and other < 0.2:
        seen = "no steal or other process seen in the VM, so the host"
    factors = sorted(slow.values())
    spread = f"{factors[0]:.1f}x" if factors[-1] - factors[0] < 0.05 else f"{factors[0]:.1f}-{factors[-1]:.1f}x"
    return (f"the machine slowed down in round{'s' if len(slow) > 1 else ''} {_rounds_text(sorted(slow))} of "
            f"{len(medians)}: every engine ran "
            f"{spread} its usual median ({seen}); paired by round a common slowdown cancels, but a tail that "
            "changes with the machine's state does not, so a quieter run may answer otherwise (rerun the runoff "
            "with the run's config file: snakemake --cores 2 --configfile CONFIG --forcerun benchmark_latency_runoff)")


def compare(best: pd.Series, other: pd.Series, objective: str, rounds: pd.DataFrame, margin: float,
            candidates: int | None = None) -> tuple[bool, str]:
    """(slower, how): whether ``other`` is shown slower than ``best`` at 95% (paired by round at the Bonferroni
    level over ``candidates`` when given, :func:`secondary_confidence`), and the evidence in words."""
    value, low, high = POINT[objective]
    name = _PERCENTILE_WORDS[objective]
    a, b = (best["backend"], best["precision"]), (other["backend"], other["precision"])
    if len(rounds) and a in rounds and b in rounds:
        slower, med, r_low, r_high, n = paired_slower(rounds[a], rounds[b], margin, candidates=candidates)
        if np.isfinite(r_low):
            return slower, (f"{name} ratio {med:.3f} [{r_low:.3f}, {r_high:.3f}] over {n} paired rounds")
    o_low, b_high = other.get(low), best.get(high)
    if pd.notna(o_low) and pd.notna(b_high) and np.isfinite(o_low) and np.isfinite(b_high):
        slower = o_low > b_high and other[value] > best[value] * (1 + margin)
        return slower, (f"{name} {other[value]:.3g} ms [{o_low:.3g}, {other[high]:.3g}] vs "
                        f"{best[value]:.3g} ms [{best[low]:.3g}, {b_high:.3g}]")
    return False, f"{name} has no interval: cannot be told apart"


def _paired(rounds: pd.DataFrame, by: pd.Series, other: pd.Series, margin: float, candidates: int) -> bool:
    """Whether ``other`` is shown slower than ``by`` paired by round at :func:`secondary_confidence`
    (False without rounds)."""
    a, b = (by["backend"], by["precision"]), (other["backend"], other["precision"])
    return a in rounds and b in rounds and paired_slower(rounds[a], rounds[b], margin, candidates=candidates)[0]


def _name(row: pd.Series) -> str:
    return f"{row['backend']} {row['precision']}"


def narrow_by_other_percentile(ranked: pd.DataFrame, tied: list, objective: str, runoff: pd.DataFrame | None,
                               group: dict, margin: float) -> tuple[list, dict]:
    """(kept, left out with the evidence) of a tie set: a member shown slower than another member on the other
    latency percentile (:data:`OTHER_PERCENTILE`; paired by round at the Bonferroni level over the tie set,
    else by intervals, beyond ``margin``) is left out. All are kept should every one be shown slower."""
    other = OTHER_PERCENTILE[objective]
    rounds = _rounds_of(runoff, group, RUNOFF_METRIC[other])
    word = _PERCENTILE_WORDS[other]
    out = {}
    for label in tied:
        row = ranked.loc[label]
        for by in tied:
            if by == label:
                continue
            slower, how = compare(ranked.loc[by], row, other, rounds, margin, candidates=len(tied))
            if slower:
                out[label] = f"{_name(row)} is slower than {_name(ranked.loc[by])} on the {word} ({how})"
                break
    kept = [label for label in tied if label not in out]
    return (kept, out) if kept else (list(tied), {})


def broken_by(members: pd.DataFrame, pick: pd.Series) -> str:
    """What picked ``pick`` among the tie set ``members``: the first of the next objectives (size, then
    accuracy) on which the members differ, with the chosen engine's value ('size (0.52 MB)')."""
    for column, _ascending, label, unit in NEXT:
        values = pd.to_numeric(members[column], errors="coerce")
        if values.notna().any() and values.nunique() > 1:
            return f"{label} ({pick[column]:.3g} {unit})"
    return "the objective"


def break_ties(ranked: pd.DataFrame, objective: str, runoff: pd.DataFrame | None, group: dict,
               margin: float) -> Tie:
    """The :class:`Tie` of one group's feasible candidates ranked by ``objective``.

    Outside the latency objectives, or with one candidate, the first ranked is chosen and the note is ''.
    With the runoff's rounds the reference is :func:`paired_best` (the first ranked unless another candidate
    is shown faster paired by round); without a tie it is chosen. A tie is narrowed by the other latency
    percentile (:func:`narrow_by_other_percentile`), then decided by size, then accuracy.
    """
    first = ranked.index[0]
    if objective not in POINT or len(ranked) < 2:
        return Tie([first], first, "", "", {})
    rounds = _rounds_of(runoff, group, RUNOFF_METRIC[objective])
    if len(rounds):
        keys = {(ranked.loc[i, "backend"], ranked.loc[i, "precision"]): i for i in ranked.index}
        start = (ranked.loc[first, "backend"], ranked.loc[first, "precision"])
        first = keys[paired_best(rounds, start, margin, [k for k in keys if k in rounds])]
    best = ranked.loc[first]
    tied, evidence = [first], {}
    for label, row in ranked.iterrows():
        if label == first:
            continue
        slower, how = compare(best, row, objective, rounds, margin)
        # Shown slower than any other feasible candidate (paired by round, at the Bonferroni level of
        # secondary_confidence): not the fastest either, whichever engine of a tie happened to have the
        # lower point value in this run.
        slower = slower or (len(rounds) > 0 and any(_paired(rounds, ranked.loc[by], row, margin, len(ranked))
                                                    for by in ranked.index if by not in (label, first)))
        if not slower:
            tied.append(label)
            evidence[label] = how
    if len(tied) == 1:
        return Tie(tied, first, "", "", {})
    kept, left_out = narrow_by_other_percentile(ranked, tied, objective, runoff, group, margin)
    members = ranked.loc[kept]
    keys = [c for c, _, _, _ in NEXT]
    order = members.assign(**{f"_{c}": pd.to_numeric(members[c], errors="coerce") for c in keys}).sort_values(
        [f"_{c}" for c in keys], ascending=[asc for _, asc, _, _ in NEXT], na_position="last", kind="mergesort")
    chosen = order.index[0]
    pick = ranked.loc[chosen]
    by = broken_by(members, pick)
    if left_out:
        other = OTHER_PERCENTILE[objective]
        word = f"{_PERCENTILE_WORDS[other]} latency"
        by = f"{word} ({pick[POINT[other][0]]:.3g} ms)" if len(kept) == 1 else f"{word}, then {by}"
    names = ", ".join(_name(ranked.loc[t]) for t in tied)
    detail = "; ".join(f"{_name(ranked.loc[t])} vs {_name(best)}: {evidence[t]}" for t in tied[1:])
    narrowed = "".join(f"; {why}" for why in left_out.values())
    note = (f"tie within measurement noise: {names} cannot be told apart at 95% ({detail}){narrowed}; "
            f"chose {_name(pick)} by {by}")
    return Tie(tied, chosen, note, by, left_out)
