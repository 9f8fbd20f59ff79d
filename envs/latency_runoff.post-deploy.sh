#!/usr/bin/env bash
# Installs this workflow's own package (workflow_scripts) into the environment, so that the rules'
# scripts can import it under `snakemake --sdm conda`. Snakemake runs this file once, inside the
# newly created environment, from its working directory (the checkout, unless --directory says
# otherwise: then set EDGEPTQ_ROOT to the checkout). A relative path in the environment file's pip
# section would not do: Snakemake copies the file to .snakemake/conda/ and conda resolves such a
# path from there. --no-deps: the environment file lists what this rule family needs
# (tests/test_envs.py checks it against the scripts' imports). --editable: code changes need no
# new environment.
set -euo pipefail
root="${EDGEPTQ_ROOT:-$PWD}"
if [ ! -f "$root/workflow_scripts/__init__.py" ] || [ ! -f "$root/pyproject.toml" ]; then
    echo "edgeptq: $root is not the edgeptq checkout (no workflow_scripts/ and pyproject.toml);" \
         "run snakemake from the checkout or set EDGEPTQ_ROOT to it" >&2
    exit 1
fi
python -m pip install --no-deps --editable "$root"
