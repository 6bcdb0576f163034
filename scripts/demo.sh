#!/usr/bin/env bash
# From nothing to the article's experiment: set up .venv, then run `wdlab demo` (flags pass on).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/wdlab demo "$@"
