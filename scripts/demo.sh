#!/usr/bin/env bash
# From nothing to the article's experiment: set up .venv, then run `wdlab demo` (flags pass on).
set -euo pipefail
cd "$(dirname "$0")/.."
WDLAB_EXTRAS=${WDLAB_EXTRAS-} bash scripts/setup.sh  # the light core: torch, numpy, matplotlib, tqdm
exec .venv/bin/wdlab demo "$@"
