#!/usr/bin/env bash
# Every test of the project: lint, unit and method tests, notebooks executed by nbval (their
# asserts are the papers' claims), the papermill rerun, and the browser tests of the widgets.
# Usage: bash tests/run_all.sh   (from the repository root, after the install in README.md)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
STATE=${CI_STATE:-$PWD/.ci-state}
mkdir -p "$STATE"
# Jupyter, IPython and matplotlib state stay inside the checkout: nothing written to $HOME.
export JUPYTER_CONFIG_DIR=$STATE/jupyter-config JUPYTER_DATA_DIR=$STATE/jupyter-data \
       JUPYTER_RUNTIME_DIR=$STATE/jupyter-runtime IPYTHONDIR=$STATE/ipython MPLCONFIGDIR=$STATE/mpl \
       JUPYTERLAB_SETTINGS_DIR=$STATE/lab-settings JUPYTERLAB_WORKSPACES_DIR=$STATE/lab-workspaces
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1 E2E_TMP=$STATE XATTR_NB_PROGRESS=summary

if ! command -v chromium >/dev/null 2>&1; then
  echo "=== chromium for the browser tests (Debian's package; never a downloaded browser)"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

echo "=== ruff"
"$PY" -m ruff check .
"$PY" -m ruff format --check .

echo "=== pytest: unit, methods, papermill, browser, and every notebook (nbval)"
"$PY" -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env --durations=15 tests notebooks "$@"
