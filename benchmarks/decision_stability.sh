#!/usr/bin/env bash
# Issue 24's check: re-measure the latency runoff N times on a finished run (a copy of it; the original
# is never written) and print each rerun's decision per model (the chosen engine and the named tie set),
# the machine's slow rounds when the decision saw any, and the runoff's own time per model from its job log. Only the runoff and what follows it rerun
# (--rerun-triggers mtime: edits to other rules' code or params do not remeasure the latency stage).
#   bash benchmarks/decision_stability.sh RESULTS_DIR [N=5] [CONFIGFILE=config/quickstart.yaml]
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:?a finished results folder}
n=${2:-5}
configfile=${3:-config/quickstart.yaml}
work=$(mktemp -d "${TMPDIR:-/tmp}/decision_stability.XXXXXX")
# -a keeps the timestamps: a plain copy gives every file a new mtime and makes upstream jobs look stale.
cp -a "$src" "$work/results"
for i in $(seq 1 "$n"); do
    start=$(date +%s)
    snakemake --cores 2 --configfile "$configfile" --config results_dir="$work/results" \
        --forcerun benchmark_latency_runoff --until decide --rerun-triggers mtime --quiet all >"$work/rerun$i.log" 2>&1
    cp "$work/results/summary/decision.md" "$work/decision$i.md"
    # Each rerun's rounds, to decide again offline (e.g. under another rule or budgets).
    cp "$work/results/summary/runoff.parquet" "$work/runoff$i.parquet"
    echo "== rerun $i ($(( $(date +%s) - start )) s, load $(cut -d' ' -f1-3 /proc/loadavg))"
    grep -E '^### |^\*\*(Deploy|Tie|The machine)' "$work/decision$i.md" |
        sed -E 's/(\*\*Deploy [^*]*\*\*).*/\1/; s/ cannot be told apart.*//; s/(its usual median \([^)]*\)).*/\1/'
    # The runoff's own time per model: base rounds, the finalists, their final rounds and any extra rounds (job logs).
    for f in "$work"/results/logs/benchmark_latency_runoff/*/*/*.log; do
        cp "$f" "$work/rerun$i.$(basename "$f")"
        echo "   $(basename "$f" .log): $(grep -hoE 'runoff of .* took [0-9.]+ s|final rounds [0-9-]+: .*|final rounds of .* took [0-9.]+ s|[0-9]+ finalists after .*|extra rounds [0-9-]+: [^(]*|final and extra rounds took [0-9.]+ s' "$f" | tail -5 | paste -sd';' -)"
    done
done
echo "decisions and logs: $work"
