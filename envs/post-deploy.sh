#!/usr/bin/env bash
# Runs inside a freshly built rule-group environment, from the directory Snakemake runs in (the
# project root): the `uvlm` command the rules call comes from this checkout; its dependencies are the
# environment's pinned packages, so none are added here.
set -euo pipefail
test -f pyproject.toml && test -d uvlm || { echo "run snakemake from the U-VLM project root" >&2; exit 1; }
python -m pip install --no-deps -e .
