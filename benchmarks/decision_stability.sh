#!/usr/bin/env bash
# Issue 24's check: re-measure the latency runoff N times on a finished run (a copy of it; the original
# is never written) and print each rerun's decision per model (the chosen engine and the named tie set).
#   bash benchmarks/decision_stability.sh RESULTS_DIR [N=5] [CONFIGFILE=config/quickstart.yaml]
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:?a finished results folder}
n=${2:-5}
configfile=${3:-config/quickstart.yaml}
work=$(mktemp -d "${TMPDIR:-/tmp}/decision_stability.XXXXXX")
cp -r "$src" "$work/results"
for i in $(seq 1 "$n"); do
    start=$(date +%s)
    snakemake --cores 2 --configfile "$configfile" --config results_dir="$work/results" \
        --forcerun benchmark_latency_runoff --until decide --quiet all >"$work/rerun$i.log" 2>&1
    cp "$work/results/summary/decision.md" "$work/decision$i.md"
    echo "== rerun $i ($(( $(date +%s) - start )) s, load $(cut -d' ' -f1-3 /proc/loadavg))"
    grep -E '^### |^\*\*(Deploy|Tie)' "$work/decision$i.md" | sed -E 's/(\*\*Deploy [^*]*\*\*).*/\1/; s/ cannot be told apart.*//'
done
echo "decisions and logs: $work"
