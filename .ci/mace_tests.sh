#!/usr/bin/env bash
# The MACE adapter's tests, in a venv of their own: mace-torch 0.3.16 pins e3nn==0.4.4, while sevenn
# (in the main test environment) needs e3nn>=0.5, so the two cannot share one environment.
# The venv sees the system's packages (torch, ase, pytest...) and adds mace-torch and e3nn 0.4.4 on
# top; ase-adapt comes from this checkout through PYTHONPATH. A skipped test fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.ci/.venv-mace  # git-ignored; reused between runs
PY="$VENV/bin/python"
[ -x "$PY" ] || python3 -m venv --system-site-packages "$VENV"
"$PY" -c "from importlib.metadata import version; assert version('mace-torch') == '0.3.16'" 2>/dev/null \
  || "$PY" -m pip install -q "mace-torch==0.3.16"  # pip then says the system's sevenn wants e3nn>=0.5: expected
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
"$PY" -c "import ase_adapt, mace"  # without mace the tests would only be skipped: fail here instead
status=0
out=$("$PY" -m pytest -q -rs -p no:cacheprovider tests/test_mace.py 2>&1) || status=$?
echo "$out"
if [ "$status" -ne 0 ]; then exit "$status"; fi
if grep -qi "skipped" <<<"$out"; then echo "mace_tests.sh: tests were skipped; a skip is not a pass" >&2; exit 1; fi
