#!/usr/bin/env bash
# Create .venv and install wdlab (with the extras in WDLAB_EXTRAS: "dev" by default, which is
# everything the tests use; "" for the light core). Safe to run again (it only tops up).
# Torch is pinned to the CPU build this machine serves (torch==2.13.0) *before* anything else,
# so no dependency can resolve a multi-GB CUDA wheel. Override with WDLAB_TORCH="torch==X".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${WDLAB_TORCH:-torch==2.13.0}
EXTRAS=${WDLAB_EXTRAS-dev}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
pip_install() { .venv/bin/python -m pip install --disable-pip-version-check -q "$@"; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    pip_install "$TORCH_SPEC"
fi
pip_install -e ".${EXTRAS:+[$EXTRAS]}"
