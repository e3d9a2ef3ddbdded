#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install mrg with its dependencies.
#   MRG_TORCH_SPEC   pip requirement for torch (default torch==2.13.0; e.g. "torch==2.5.1" or a CUDA wheel URL)
#   MRG_PYTHON       interpreter that creates the venv (default python3)
#   MRG_EXTRAS       extras to install (default none; the test script asks for "dev")
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${MRG_PYTHON:-python3}"
TORCH_SPEC="${MRG_TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${MRG_EXTRAS:-}"
VENV=.venv

if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
  echo "error: mrg needs Python >= 3.10; set MRG_PYTHON to a newer interpreter" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV with $("$PY" --version)"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
# pip on some machines warns about missing local index folders; keep the output readable
pip_install() { "${PIP[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

stamp="$VENV/.mrg-install-stamp"
want="$(cat pyproject.toml; echo "$TORCH_SPEC $EXTRAS")"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0  # already installed for this pyproject, torch spec and extras
fi
if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  echo "==> installing $TORCH_SPEC"
  pip_install "$TORCH_SPEC"
fi
target="."
[ -n "$EXTRAS" ] && target=".[$EXTRAS]"
echo "==> installing mrg ($target) and its dependencies"
pip_install -e "$target"

# METEOR and the PTB tokenizer need a Java runtime.
if ! command -v java >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing a Java runtime for METEOR (apt-get install default-jre-headless)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null
  else
    echo "warning: no Java runtime found; METEOR needs one (e.g. sudo apt-get install default-jre-headless)" >&2
  fi
fi
echo "$want" > "$stamp"
