# Sourced by scripts/gpu-check.sh and scripts/gpu-train.sh: the Python packages a bare CUDA machine
# (PyTorch preinstalled, Python 3.12, no internet) lacks, carried as wheels in .whl/.
#
#   gpu_fetch_wheels            where PyPI is reachable: download them into $WHEELS
#   gpu_install_wheels [DIR]    install $WHEELS into DIR (default: a temporary site), export PYTHONPATH
#   gpu_use_site                put an earlier call's site (.gpu-site, kept between device calls) on PYTHONPATH
REPO="${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
PY="${PYTHON:-python3}"
WHEELS="${HDRVIDEO_WHEELS:-$REPO/.whl}"
GPU_SITE="$REPO/.gpu-site"
# PyAV (with its FFmpeg, libx264 and libx265) and platformdirs; the GPU image has torch, numpy,
# typer, rich, safetensors, filelock, onnx, onnxruntime and pytest
NEEDED=("av==18.1.0" "platformdirs>=4")
MODULES=(av platformdirs typer rich safetensors filelock numpy pytest)

gpu_fetch_wheels() {
  mkdir -p "$WHEELS"
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEELS" "${NEEDED[@]}"
}

gpu_missing() {
  "$PY" -c 'import importlib.util as u, sys; print(" ".join(m for m in sys.argv[1:] if u.find_spec(m) is None))' "${MODULES[@]}"
}

gpu_install_wheels() {
  local site="${1:-${TMPDIR:-/tmp}/hdrvideo-gpu-site}"
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "no wheels in $WHEELS" >&2; return 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --upgrade --target "$site" \
    "$WHEELS"/*.whl || { echo "installing the wheels in $WHEELS failed" >&2; return 2; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
}

gpu_use_site() {
  [ -d "$GPU_SITE" ] && export PYTHONPATH="$GPU_SITE${PYTHONPATH:+:$PYTHONPATH}"
  return 0
}

# the missing packages from carried wheels (or an earlier call's .gpu-site); fails with one line
gpu_prepare() {
  local name="$1" missing
  gpu_use_site
  missing="$(gpu_missing)"
  [ -z "$missing" ] && return 0
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    gpu_install_wheels || { echo "$name: installing the wheels in $WHEELS failed" >&2; return 2; }
  else
    echo "$name: missing Python packages ($missing) and no wheels in $WHEELS: run scripts/gpu-check.sh --fetch-wheels where PyPI is reachable and carry .whl" >&2
    return 2
  fi
}

# the common start of a GPU script: OUTDIR given and created, packages ready, the repository on
# PYTHONPATH, unbuffered output; one line and exit 2 otherwise (the caller: gpu_start NAME USAGE "$1")
gpu_start() {
  local name="$1" usage="$2" out="${3:-}"
  if [ -z "$out" ] || [ "${out#-}" != "$out" ]; then
    echo "usage: $usage" >&2
    exit 2
  fi
  mkdir -p "$out" || exit 2
  gpu_prepare "$name" || exit 2
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONUNBUFFERED=1
}
