#!/usr/bin/env bash
# hdrvideo's GPU check: GPU-marked tests, sr4-itm speed (model, end to end with x265 ultrafast,
# peak GPU memory; FP32 and FP16 through torch), every shipped preset on the GPU against the CPU,
# torch.compile variants — into OUTDIR/summary.json and OUTDIR/gpu-check.log, within 8 minutes.
#
#   scripts/gpu-check.sh OUTDIR [--dry-run] [--budget SECONDS] [--only env,tests,...]
#   scripts/gpu-check.sh --fetch-wheels      # where PyPI is reachable: the wheels a bare GPU machine lacks, into .whl/
#
# For a bare CUDA machine with PyTorch preinstalled and no internet (Python 3.12): fetch the wheels
# here first, then carry .whl (ignored by git) with the checkout, e.g. with the device tool:
#   run(command="scripts/gpu-check.sh $OUT", carry=[".whl"], timeout_s=540)
# --dry-run runs every step on the CPU at tiny sizes (what the test suite does with it).
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
WHEELS="${HDRVIDEO_WHEELS:-$REPO/.whl}"
# PyAV (with its FFmpeg and libx265) and platformdirs; the GPU image has torch, numpy, typer, rich,
# safetensors, filelock, onnx, onnxruntime and pytest
NEEDED=("av==18.1.0" "platformdirs>=4")

if [ "${1:-}" = "--fetch-wheels" ]; then
  mkdir -p "$WHEELS"
  exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEELS" "${NEEDED[@]}"
fi

OUT="${1:-}"
if [ -z "$OUT" ] || [ "${OUT#-}" != "$OUT" ]; then
  echo "usage: scripts/gpu-check.sh OUTDIR [--dry-run] [--budget SECONDS] [--only STEPS] | --fetch-wheels" >&2
  exit 2
fi
shift
mkdir -p "$OUT" || exit 2

missing="$("$PY" -c 'import importlib.util as u; print(" ".join(m for m in ("av", "platformdirs", "typer", "rich", "safetensors", "filelock", "numpy", "pytest") if u.find_spec(m) is None))')"
if [ -n "$missing" ]; then
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    SITE="${TMPDIR:-/tmp}/hdrvideo-gpu-check-site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$SITE" \
      "$WHEELS"/*.whl || { echo "gpu-check: installing the wheels in $WHEELS failed" >&2; exit 2; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "gpu-check: missing Python packages ($missing) and no wheels in $WHEELS: run scripts/gpu-check.sh --fetch-wheels where PyPI is reachable and carry .whl" >&2
    exit 2
  fi
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec timeout --kill-after=10 480 "$PY" "$REPO/scripts/gpu_check.py" "$OUT" "$@"
