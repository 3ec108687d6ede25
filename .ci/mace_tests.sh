#!/usr/bin/env bash
# The MACE adapter's tests, in a venv of their own: mace-torch 0.3.16 pins e3nn==0.4.4, while sevenn
# (in the main test environment) needs e3nn>=0.5, so the two cannot share one environment.
#
# The MACE venv sees the packages of the Python that runs this script (python3 on PATH: a user's
# venv, a conda env or the bare system Python alike) through a .pth file, not through
# --system-site-packages (which sees only the base interpreter's packages, never a venv's). It adds
# mace-torch and e3nn 0.4.4 on top; pip is held to the torch already installed (a constraint), so it
# can never pull another torch build. ase-adapt comes from this checkout through PYTHONPATH. A venv
# made for another Python, or one that cannot import what the tests need, is rebuilt. A skipped test
# fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.ci/.venv-mace  # git-ignored; reused between runs
PARENT=$(command -v python3)
PY="$VENV/bin/python"
identity=$("$PARENT" -c 'import sys; print(sys.executable, sys.version.split()[0])')

build() {
  rm -rf "$VENV"
  "$PARENT" -m venv "$VENV"
  echo "$identity" > "$VENV/parent-python"
}

link_parent() {  # the parent's package folders, after the venv's own (its e3nn 0.4.4 wins); rewritten every run
  local site
  site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$PARENT" -c 'import sys
print("\n".join(dict.fromkeys(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))))' \
    > "$site/_ase_adapt_parent.pth"
}

[ -x "$PY" ] && [ "$(cat "$VENV/parent-python" 2>/dev/null)" = "$identity" ] || build
link_parent
torch_version=$("$PY" -c 'from importlib.metadata import version; print(version("torch"))' 2>/dev/null) || {
  echo "mace_tests.sh: $PARENT has no torch; install the test extra first (README command 2)" >&2; exit 1; }
constraints=$(mktemp)  # outside the venv, which a rebuild deletes
trap 'rm -f "$constraints"' EXIT
echo "torch==$torch_version" > "$constraints"

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
ready() { "$PY" -c "from importlib.metadata import version; import torch, ase_adapt, mace, e3nn; \
assert version('mace-torch') == '0.3.16' and e3nn.__version__ == '0.4.4'" 2>/dev/null; }
install() {  # pip then says the parent's sevenn wants e3nn>=0.5: expected, sevenn is not used here
  "$PY" -m pip install -q --disable-pip-version-check -c "$constraints" "mace-torch==0.3.16" "e3nn==0.4.4"
}
if ! ready; then
  install || true
  if ! ready; then  # a broken environment is rebuilt once, never reused
    echo "mace_tests.sh: the MACE environment in $VENV was broken; rebuilding it" >&2
    build
    link_parent
    install
    ready || { echo "mace_tests.sh: cannot import torch, ase_adapt, mace-torch 0.3.16 and e3nn 0.4.4 in $VENV" >&2; exit 1; }
  fi
fi
status=0
out=$("$PY" -m pytest -q -rs -p no:cacheprovider tests/test_mace.py 2>&1) || status=$?
echo "$out"
if [ "$status" -ne 0 ]; then exit "$status"; fi
if grep -qi "skipped" <<<"$out"; then echo "mace_tests.sh: tests were skipped; a skip is not a pass" >&2; exit 1; fi
