#!/usr/bin/env bash
# Quickstart wall time from an empty results folder, then the latency table it produced.
#   bash benchmarks/quickstart.sh [RESULTS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
results=${1:-results}
rm -rf "$results"
start=$(date +%s)
snakemake --cores 2 --configfile config/quickstart.yaml --config results_dir="$results" --quiet rules
end=$(date +%s)
echo "quickstart wall time: $((end - start)) s"
python benchmarks/latency_table.py "$results"
