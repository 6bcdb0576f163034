#!/usr/bin/env bash
# From nothing to a tested checkout: set up .venv, lint, check formatting, run the tests.
# With no arguments (as CI runs it), the numerics tests (`-m numerics`: float results compared
# across kernels) run again under each CPU kernel path torch can take on this machine
# (ATEN_CPU_CAPABILITY=default, avx2, avx512), so a tolerance that holds on one path only fails
# on every machine, not just on the CPUs that take the other path.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The report's browser test drives Debian's chromium (no browser download at run time).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "note: chromium is not installed (apt-get install chromium); browser tests skip" >&2
    fi
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if [ $# -gt 0 ]; then
    exec .venv/bin/python -m pytest "$@"
fi
.venv/bin/python -m pytest
has() { grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | grep -qw "$1"; }
caps="default"
if has avx2; then caps="$caps avx2"; fi
if has avx512f && has avx512bw && has avx512vl && has avx512dq; then caps="$caps avx512"; fi
for cap in $caps; do
    echo "numerics tests under ATEN_CPU_CAPABILITY=$cap"
    ATEN_CPU_CAPABILITY=$cap .venv/bin/python -m pytest -m numerics -p no:cacheprovider
done
