#!/usr/bin/env bash
# The GPU check in one call: a Python environment with a CUDA torch and the project, then `python -m
# benchmarks.gpu_check` (the CUDA tests and the GPU measurements, < 7.5 min of steps on one H200-class GPU), which
# writes benchmarks/RESULTS-gpu.md.
#
#   bash benchmarks/gpu_check.sh [--budget SECONDS]     # on the GPU machine, from a checkout
#   bash benchmarks/gpu_check.sh --dry-run              # anywhere: which torch it would use, and the plan checked
#   bash benchmarks/gpu_check.sh --install-only         # build the environment, check it imports the project, stop
#   bash benchmarks/gpu_check.sh --help                 # this text and the options of `python -m benchmarks.gpu_check`
#
# Which torch it uses (it never replaces a CUDA torch that is already there):
#   1. $CROC_PYTHON, if set: that interpreter as it is (its torch must see a GPU; nothing is installed).
#   2. .venv-gpu/bin/python (or $CROC_GPU_VENV), if an earlier call built it and its torch sees a GPU.
#   3. .venv/bin/python (`make venv`), if its torch sees a GPU (the lock's CPU wheel does not).
#   4. A wheelhouse, for a machine with no package index: `make gpu-wheels` (benchmarks/gpu_wheels.py) fills .whl
#      (or $CROC_WHEELS) where pip reaches an index; carried to the GPU machine, it is checked (one wheel per pin)
#      and installed with --no-deps into .gpu-site (or $CROC_GPU_SITE; a folder this script marked, or a new one),
#      put first on PYTHONPATH with the checkout, for python3 on PATH (or $CROC_TORCH_PYTHON), whose CUDA torch
#      and large libraries stay as they are; installed again only when the wheels or the interpreter change.
#   5. python3 on PATH, if its torch sees a GPU (a CUDA container, a cluster module): .venv-gpu is created with
#      --system-site-packages (and, where that python3 is itself a virtual environment's, a .pth naming its
#      site-packages) so that this torch is used, and the project and its test tools are installed with the lock's
#      versions for everything else and torch pinned to the version found, so pip cannot swap it.
#   6. Otherwise: .venv-gpu with torch at the lock's version from the package index (on Linux x86_64 the default
#      PyPI wheel of that version is the CUDA build), then the project, all with the lock's versions.
# Steps 5-6 need the package index (or PIP_INDEX_URL / PIP_FIND_LINKS pointing at a mirror); a first call that
# installs torch takes longer than the 8 minutes of the check itself.
set -euo pipefail

# Paths named by the caller are read from the caller's directory (a bare command such as python3 from PATH); the
# defaults live in the checkout.
caller_path() { [[ -z "$1" || "$1" == /* || "$1" != */* ]] && echo "$1" || echo "$PWD/$1"; }
GPU_VENV=$(caller_path "${CROC_GPU_VENV:-}")
WHEELS=$(caller_path "${CROC_WHEELS:-}")
GPU_SITE=$(caller_path "${CROC_GPU_SITE:-}")
TORCH_PYTHON=$(caller_path "${CROC_TORCH_PYTHON:-python3}")
[[ -n "${CROC_PYTHON:-}" ]] && CROC_PYTHON=$(caller_path "$CROC_PYTHON")
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOCK=requirements/lock.txt
GPU_VENV=${GPU_VENV:-.venv-gpu}
WHEELS=${WHEELS:-.whl}
GPU_SITE=${GPU_SITE:-.gpu-site}
SITE_MARK=.gpu_check_site  # in $GPU_SITE: this script made it, and from which wheelhouse and interpreter
DRY_RUN=0
INSTALL_ONLY=0
HELP=0
CHECK_ARGS=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1; CHECK_ARGS+=("$arg") ;;
    --install-only) INSTALL_ONLY=1 ;;
    -h|--help) HELP=1 ;;
    *) CHECK_ARGS+=("$arg") ;;
  esac
done
# The options of `python -m benchmarks.gpu_check` are its own (stdlib only, so any python3 reads them): shown, or a
# wrong one refused, before anything is installed; the environment build can take minutes and gigabytes.
ARGS_PYTHON=${CROC_PYTHON:-$TORCH_PYTHON}
if [[ $HELP == 1 ]]; then
  sed -n '2,/^set -euo pipefail$/p' benchmarks/gpu_check.sh | sed '$d' | sed -E 's/^# ?//'
  echo
  exec "$ARGS_PYTHON" -m benchmarks.gpu_check --help
fi
if ! "$ARGS_PYTHON" -c 'import sys
from benchmarks.gpu_check import parse_arguments
parse_arguments(sys.argv[1:], prog="bash benchmarks/gpu_check.sh")' "${CHECK_ARGS[@]}"; then
  exit 2
fi
if [[ $DRY_RUN == 1 && $INSTALL_ONLY == 1 ]]; then
  echo "gpu_check: --dry-run installs nothing and --install-only only installs: give one of them" >&2
  exit 2
fi
if [[ -n "${CROC_WHEELS:-}" && ! -f "$WHEELS/pins.txt" ]]; then
  echo "gpu_check: CROC_WHEELS=$WHEELS holds no pins.txt (not a wheelhouse, or an unfinished one: make gpu-wheels)" >&2
  exit 2
fi

sees_gpu() {  # python with a torch that sees a CUDA device
  [[ -x "$1" ]] || command -v "$1" >/dev/null 2>&1 || return 1
  "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1
}

PROJECT_IMPORTS='import modeling_croc, trainer, pytest, lap; from transformers import MistralCommonBackend'
has_project() {  # the project and its test tools (the `test` extra: the tiny tokenizers come from mistral_common)
  "$1" -c "$PROJECT_IMPORTS" >/dev/null 2>&1
}

site_stamp() {  # what a site folder was made from: the interpreter, the pins and the wheel files
  "$PY" -c 'import sys; print(sys.implementation.cache_tag, sys.version.split()[0], sys.executable)'
  cat "$WHEELS/pins.txt"
  (cd "$WHEELS" && ls -- *.whl)
}

site_is_current() {  # $GPU_SITE holds this script's install of this wheelhouse for this interpreter
  [[ -f "$GPU_SITE/$SITE_MARK" ]] && cmp -s <(site_stamp) "$GPU_SITE/$SITE_MARK"
}

use_site() {  # $GPU_SITE first on PYTHONPATH, then the checkout
  PYTHONPATH="$(cd "$GPU_SITE" && pwd):$PWD${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONPATH
}

install_wheelhouse() {  # the wheels into $GPU_SITE, again only when the wheelhouse or the interpreter changed
  if [[ "$(cd "$WHEELS" && pwd -P)" == "$(mkdir -p "$GPU_SITE" && cd "$GPU_SITE" && pwd -P)" ]]; then
    echo "gpu_check: CROC_GPU_SITE is the wheelhouse itself ($WHEELS); name a folder of its own" >&2
    exit 2
  fi
  if site_is_current; then
    use_site
    return
  fi
  if [[ ! -f "$GPU_SITE/$SITE_MARK" && -n "$(ls -A "$GPU_SITE")" ]]; then
    echo "gpu_check: $GPU_SITE holds files this script did not put there; set CROC_GPU_SITE to a new folder" >&2
    exit 2
  fi
  if ! "$PY" -m benchmarks.gpu_wheels --verify "$WHEELS"; then
    exit 2
  fi
  find "$GPU_SITE" -mindepth 1 -delete  # an earlier install of this script's (its mark says so)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$GPU_SITE" \
    "$WHEELS"/*.whl
  site_stamp > "$GPU_SITE/$SITE_MARK"
  use_site
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

if [[ $DRY_RUN == 1 ]]; then
  # No GPU needed and nothing installed: the plan is checked with an interpreter that has the project (a wheelhouse
  # installed by an earlier call, else `make venv`'s).
  if [[ "$HOW" == wheelhouse ]] && site_is_current; then
    use_site
  elif [[ "$HOW" != ready ]]; then
    PY=.venv/bin/python
    if [[ ! -x "$PY" ]]; then
      echo "gpu_check: --dry-run needs the project in an environment: make venv, or --install-only first" >&2
      exit 2
    fi
  fi
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
    # not its own, to --system-site-packages: a .pth adds the folders that hold its torch as site folders (so that
    # the .pth files inside them are read too).
    "$PY" -c 'import site, sys
for folder in site.getsitepackages() if sys.prefix != sys.base_prefix else []:
    print(f"import site; site.addsitedir({folder!r})")' \
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
