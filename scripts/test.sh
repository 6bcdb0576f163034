#!/usr/bin/env bash
# From nothing to a tested checkout: set up .venv, lint, check formatting, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
