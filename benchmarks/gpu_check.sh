#!/usr/bin/env bash
# The GPU check in one call: a Python environment with a CUDA torch and the project, then `python -m
# benchmarks.gpu_check` (the CUDA tests and the GPU measurements, < 7.5 min of steps on one H200-class GPU), which
# writes benchmarks/RESULTS-gpu.md.
#
#   bash benchmarks/gpu_check.sh [--budget SECONDS]     # on the GPU machine, from a checkout
#   bash benchmarks/gpu_check.sh --dry-run              # anywhere: which torch it would use, and the plan checked
#   bash benchmarks/gpu_check.sh --install-only         # build the environment, check it imports the project, stop
#
# Which torch it uses (it never replaces a CUDA torch that is already there):
#   1. $CROC_PYTHON, if set: that interpreter as it is (its torch must see a GPU; nothing is installed).
#   2. .venv-gpu/bin/python (or $CROC_GPU_VENV), if an earlier call built it and its torch sees a GPU.
#   3. .venv/bin/python (`make venv`), if its torch sees a GPU (the lock's CPU wheel does not).
#   4. A wheelhouse, for a machine with no package index: `make gpu-wheels` (benchmarks/gpu_wheels.py) fills .whl
#      (or $CROC_WHEELS) where pip reaches an index; carried to the GPU machine, its wheels are installed with
#      --no-deps into .gpu-site (or $CROC_GPU_SITE), put first on PYTHONPATH with the checkout, for python3 on
#      PATH (or $CROC_TORCH_PYTHON), whose CUDA torch and large libraries stay as they are.
#   5. python3 on PATH, if its torch sees a GPU (a CUDA container, a cluster module): .venv-gpu is created with
#      --system-site-packages (and, where that python3 is itself a virtual environment's, a .pth naming its
#      site-packages) so that this torch is used, and the project and its test tools are installed with the lock's
#      versions for everything else and torch pinned to the version found, so pip cannot swap it.
#   6. Otherwise: .venv-gpu with torch at the lock's version from the package index (on Linux x86_64 the default
#      PyPI wheel of that version is the CUDA build), then the project, all with the lock's versions.
# Steps 5-6 need the package index (or PIP_INDEX_URL / PIP_FIND_LINKS pointing at a mirror); a first call that
# installs torch takes longer than the 8 minutes of the check itself.
set -euo pipefail

# Folders named by the caller are read from the caller's directory; the defaults live in the checkout.
caller_path() { [[ -z "$1" || "$1" == /* ]] && echo "$1" || echo "$PWD/$1"; }
GPU_VENV=$(caller_path "${CROC_GPU_VENV:-}")
WHEELS=$(caller_path "${CROC_WHEELS:-}")
GPU_SITE=$(caller_path "${CROC_GPU_SITE:-}")
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOCK=requirements/lock.txt
GPU_VENV=${GPU_VENV:-.venv-gpu}
WHEELS=${WHEELS:-.whl}
GPU_SITE=${GPU_SITE:-.gpu-site}
TORCH_PYTHON=${CROC_TORCH_PYTHON:-python3}
DRY_RUN=0
INSTALL_ONLY=0
CHECK_ARGS=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1; CHECK_ARGS+=("$arg") ;;
    --install-only) INSTALL_ONLY=1 ;;
    *) CHECK_ARGS+=("$arg") ;;
  esac
done

sees_gpu() {  # python with a torch that sees a CUDA device
  [[ -x "$1" ]] || command -v "$1" >/dev/null 2>&1 || return 1
  "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1
}

PROJECT_IMPORTS='import modeling_croc, trainer, pytest, lap; from transformers import MistralCommonBackend'
has_project() {  # the project and its test tools (the `test` extra: the tiny tokenizers come from mistral_common)
  "$1" -c "$PROJECT_IMPORTS" >/dev/null 2>&1
}

install_wheelhouse() {  # the wheels into $GPU_SITE (again only when the wheelhouse changed), then PYTHONPATH
  if ! cmp -s "$WHEELS/pins.txt" "$GPU_SITE/pins.txt"; then
    if [[ -e "$GPU_SITE" && ! -f "$GPU_SITE/pins.txt" ]]; then
      echo "gpu_check: $GPU_SITE exists and was not made by this script; set CROC_GPU_SITE to a new folder" >&2
      exit 2
    fi
    rm -rf "$GPU_SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$GPU_SITE" \
      "$WHEELS"/*.whl
    cp "$WHEELS/pins.txt" "$GPU_SITE/pins.txt"
  fi
  PYTHONPATH="$(cd "$GPU_SITE" && pwd):$PWD${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONPATH
}

choose_python() {  # prints "<python> <how>"; how: ready | wheelhouse | system-torch | install-torch
  if [[ -n "${CROC_PYTHON:-}" ]]; then
    echo "$CROC_PYTHON ready"
  elif sees_gpu "$GPU_VENV/bin/python" && has_project "$GPU_VENV/bin/python"; then
    echo "$GPU_VENV/bin/python ready"
  elif sees_gpu .venv/bin/python && has_project .venv/bin/python; then
    echo ".venv/bin/python ready"
  elif [[ -f "$WHEELS/pins.txt" ]]; then
    echo "$TORCH_PYTHON wheelhouse"
  elif sees_gpu "$TORCH_PYTHON"; then
    echo "$TORCH_PYTHON system-torch"
  else
    echo "$TORCH_PYTHON install-torch"
  fi
}

read -r PY HOW < <(choose_python)
if [[ "$HOW" == wheelhouse ]]; then
  echo "gpu_check: python: $PY (wheelhouse $WHEELS: $(grep -c . "$WHEELS/pins.txt") wheels into $GPU_SITE)" >&2
else
  echo "gpu_check: python: $PY ($HOW)" >&2
fi
if [[ -n "${CROC_PYTHON:-}" ]] && ! has_project "$CROC_PYTHON"; then
  echo "gpu_check: CROC_PYTHON=$CROC_PYTHON cannot import the project with its test extra (pip install -e '.[test]')" >&2
  exit 2
fi

if [[ $DRY_RUN == 1 && $INSTALL_ONLY == 0 ]]; then
  # No GPU needed and nothing installed: the plan is checked with whichever interpreter has the project.
  [[ "$HOW" == ready ]] || PY=${CROC_PYTHON:-.venv/bin/python}
  exec "$PY" -m benchmarks.gpu_check "${CHECK_ARGS[@]}"
fi

if [[ "$HOW" == wheelhouse ]]; then
  install_wheelhouse
  if ! error=$("$PY" -c "$PROJECT_IMPORTS" 2>&1); then
    echo "gpu_check: $PY with $WHEELS cannot import the project: $(tail -n 1 <<<"$error")" >&2
    exit 2
  fi
elif [[ "$HOW" != ready ]]; then
  # The lock without torch, plus torch pinned to what this environment will hold.
  constraints=$(mktemp)
  grep -iv '^torch==' "$LOCK" > "$constraints"
  if [[ "$HOW" == system-torch ]]; then
    "$PY" -m venv --system-site-packages "$GPU_VENV"
    # A virtual environment's python3 (a CUDA image's /opt/.../.venv) lends its base interpreter's site-packages,
    # not its own, to --system-site-packages: a .pth names the folders that hold its torch.
    "$PY" -c 'import site, sys; sys.prefix != sys.base_prefix and print("\n".join(site.getsitepackages()))' \
      > "$("$GPU_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_torch_python.pth"
    torch_version=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
    "$PY" - "$torch_version" <<'EOF' || { echo "gpu_check: torch $torch_version is older than the project's floor (2.4); set CROC_PYTHON to a newer one" >&2; exit 2; }
import sys
major, minor = (int(part) for part in sys.argv[1].split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 4) else 1)
EOF
    echo "torch==$torch_version" >> "$constraints"
  else
    "$PY" -m venv "$GPU_VENV"
    grep -i '^torch==' "$LOCK" >> "$constraints"
  fi
  PY=$GPU_VENV/bin/python
  "$PY" -m pip install -q -c "$constraints" pip setuptools wheel
  [[ "$HOW" == install-torch ]] && "$PY" -m pip install -q -c "$constraints" torch
  "$PY" -m pip install -q -c "$constraints" --no-build-isolation -e ".[test]" -r requirements/gpu.txt
  rm -f "$constraints"
fi
if [[ $INSTALL_ONLY == 1 ]]; then
  echo "gpu_check: environment ready: $PY${PYTHONPATH:+ with PYTHONPATH=$PYTHONPATH}" >&2
  exit 0
fi
sees_gpu "$PY" || { echo "gpu_check: $PY's torch sees no CUDA device" >&2; exit 2; }

exec "$PY" -m benchmarks.gpu_check --python "$PY" "${CHECK_ARGS[@]}"
