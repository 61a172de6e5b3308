#!/usr/bin/env bash
# The GPU check in one call: a Python environment from requirements/lock.txt, then `python -m benchmarks.gpu_check`
# (the CUDA tests and the GPU measurements, < 7.5 min of steps on one H200-class GPU), which writes
# benchmarks/RESULTS-gpu.md.
#
#   bash benchmarks/gpu_check.sh [--budget SECONDS]     # on the GPU machine, from a checkout
#   bash benchmarks/gpu_check.sh --dry-run              # anywhere: which torch it would use, and the plan checked
#
# Which torch it uses (it never replaces a CUDA torch that is already there):
#   1. $CROC_PYTHON, if set: that interpreter as it is (its torch must see a GPU; nothing is installed).
#   2. .venv-gpu/bin/python (or $CROC_GPU_VENV), if an earlier call built it and its torch sees a GPU.
#   3. .venv/bin/python (`make venv`), if its torch sees a GPU (the lock's CPU wheel does not).
#   4. python3 on PATH, if its torch sees a GPU (a CUDA container, a cluster module): .venv-gpu is created with
#      --system-site-packages so that this torch is used, and the project and its test tools are installed with
#      the lock's versions for everything else and torch pinned to the version found, so pip cannot swap it.
#   5. Otherwise: .venv-gpu with torch at the lock's version from the package index (on Linux x86_64 the default
#      PyPI wheel of that version is the CUDA build), then the project, all with the lock's versions.
# Steps 4-5 need the package index (or PIP_INDEX_URL / PIP_FIND_LINKS pointing at a mirror or wheelhouse); a first
# call that installs torch takes longer than the 8 minutes of the check itself.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOCK=requirements/lock.txt
GPU_VENV=${CROC_GPU_VENV:-.venv-gpu}
DRY_RUN=0
for arg in "$@"; do
  [[ "$arg" == "--dry-run" ]] && DRY_RUN=1
done

sees_gpu() {  # python with a torch that sees a CUDA device
  [[ -x "$1" ]] || command -v "$1" >/dev/null 2>&1 || return 1
  "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1
}

has_project() {  # the project and its test tools (the `test` extra: the tiny tokenizers come from mistral_common)
  "$1" -c 'import modeling_croc, trainer, pytest, lap; from transformers import MistralCommonBackend' >/dev/null 2>&1
}

choose_python() {  # prints "<python> <how>"; how: ready | system-torch | install-torch
  if [[ -n "${CROC_PYTHON:-}" ]]; then
    echo "$CROC_PYTHON ready"
  elif sees_gpu "$GPU_VENV/bin/python" && has_project "$GPU_VENV/bin/python"; then
    echo "$GPU_VENV/bin/python ready"
  elif sees_gpu .venv/bin/python && has_project .venv/bin/python; then
    echo ".venv/bin/python ready"
  elif sees_gpu python3; then
    echo "python3 system-torch"
  else
    echo "python3 install-torch"
  fi
}

read -r PY HOW < <(choose_python)
echo "gpu_check: python: $PY ($HOW)" >&2
if [[ -n "${CROC_PYTHON:-}" ]] && ! has_project "$CROC_PYTHON"; then
  echo "gpu_check: CROC_PYTHON=$CROC_PYTHON cannot import the project with its test extra (pip install -e '.[test]')" >&2
  exit 2
fi

if [[ $DRY_RUN == 1 ]]; then
  # No GPU needed and nothing installed: the plan is checked with whichever interpreter has the project.
  [[ "$HOW" == ready ]] || PY=${CROC_PYTHON:-.venv/bin/python}
  exec "$PY" -m benchmarks.gpu_check "$@"
fi

if [[ "$HOW" != ready ]]; then
  # The lock without torch, plus torch pinned to what this environment will hold.
  constraints=$(mktemp)
  grep -iv '^torch==' "$LOCK" > "$constraints"
  if [[ "$HOW" == system-torch ]]; then
    python3 -m venv --system-site-packages "$GPU_VENV"
    torch_version=$(python3 -c 'import torch; print(torch.__version__.split("+")[0])')
    python3 - "$torch_version" <<'EOF' || { echo "gpu_check: torch $torch_version is older than the project's floor (2.4); set CROC_PYTHON to a newer one" >&2; exit 2; }
import sys
major, minor = (int(part) for part in sys.argv[1].split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 4) else 1)
EOF
    echo "torch==$torch_version" >> "$constraints"
  else
    python3 -m venv "$GPU_VENV"
    grep -i '^torch==' "$LOCK" >> "$constraints"
  fi
  PY=$GPU_VENV/bin/python
  "$PY" -m pip install -q -c "$constraints" pip setuptools wheel
  [[ "$HOW" == install-torch ]] && "$PY" -m pip install -q -c "$constraints" torch
  "$PY" -m pip install -q -c "$constraints" --no-build-isolation -e ".[test]"
  rm -f "$constraints"
  sees_gpu "$PY" || { echo "gpu_check: $PY's torch sees no CUDA device" >&2; exit 2; }
fi

exec "$PY" -m benchmarks.gpu_check --python "$PY" "$@"
