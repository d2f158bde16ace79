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
# shellcheck source=scripts/gpu-env.sh
. "$REPO/scripts/gpu-env.sh"

if [ "${1:-}" = "--fetch-wheels" ]; then
  gpu_fetch_wheels
  exit $?
fi

gpu_start gpu-check "scripts/gpu-check.sh OUTDIR [--dry-run] [--budget SECONDS] [--only STEPS] | --fetch-wheels" "${1:-}"
OUT="$1"
shift
exec timeout --kill-after=10 480 "$PY" "$REPO/scripts/gpu_check.py" "$OUT" "$@"
