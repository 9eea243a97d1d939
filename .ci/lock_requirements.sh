#!/usr/bin/env bash
# Regenerate requirements.txt: the exact versions of the `test` extra's closure, resolved afresh.
#
#   bash .ci/lock_requirements.sh [VENV]     # from the project root; ~3.3 GB venv, a few minutes
#
# A fresh venv (deleted afterwards) gets `pip install -e ".[test]"` (pyproject's ranges), and
# `pip freeze --exclude-editable` of it, under the header below, becomes requirements.txt.
# CI installs that file before the project, so CI tests exactly these versions; rerun the tests
# after regenerating it (VENV, a new folder, keeps the venv for that; else a temporary one is
# deleted). tests/test_requirements.py checks that the file covers pyproject's ranges.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ge 1 ]; then
  venv="$1"
  [ ! -e "$venv" ] || { echo "lock_requirements.sh: $venv exists; give a new folder" >&2; exit 2; }
else
  venv="$(mktemp -d)"
  trap 'rm -rf "$venv"' EXIT
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q -e ".[test]"
py="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
{
  echo "# The exact versions CI tests: a lock of pyproject.toml's \`test\` extra (Python $py, Linux"
  echo "# x86_64). pyproject.toml keeps the ranges; this file is generated, do not edit it by hand."
  echo "# Regenerate (fresh venv, pip install -e \".[test]\", pip freeze --exclude-editable):"
  echo "#   bash .ci/lock_requirements.sh"
  echo "# Install (what .ci/run does):  pip install -r requirements.txt -e \".[test]\""
  echo "# torch: CI runs PyTorch's CPU build (freeze says +cpu); the pin below leaves the build"
  echo "# label out, so it admits that build and the default one where pip has only that."
  "$venv/bin/pip" freeze --exclude-editable | sed -E 's/^(torch==[^+]*)\+cpu$/\1/'
} > requirements.txt.tmp
mv requirements.txt.tmp requirements.txt
echo "wrote requirements.txt ($(grep -vc '^#' requirements.txt) packages)"
