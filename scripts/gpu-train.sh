#!/usr/bin/env bash
# Fine-tune the shipped networks on one CUDA GPU (both styles, every IRNet preset) within one
# deadline, evaluate them next to the shipped files, and write OUTDIR/summary.json,
# OUTDIR/gpu-train.log and OUTDIR/weights.tar. See scripts/gpu_train.py for the steps.
#
#   scripts/gpu-train.sh OUTDIR --photos DIR [--teacher AGCM.pth] [--budget 480] [--runs itm,sr4-itm-real,...]
#                        [--init RUN=FILE ...] [--dry-run]
#   scripts/gpu-train.sh --install-wheels    # install carried .whl/ into .gpu-site/ (kept by the machine between calls)
#
# The device tool sends at most 64 MiB: the photographs (57 MB) and the PyAV wheel (36 MB) do not
# travel together, so on a lent GPU machine it takes two calls in a row (the machine stays warm
# for about 30 s between them; .gpu-site, .gpu-init, .whl and .photos are ignored by git):
#   here, once:  scripts/gpu-check.sh --fetch-wheels
#                mkdir -p .photos && cp -r ../shared/data/hdr-photos/polyhaven ../shared/reference/agcm/AGCM.pth .photos/
#   call 1:      run(command="scripts/gpu-train.sh --install-wheels", carry=[".whl"], timeout_s=120)
#   call 2:      run(command="scripts/gpu-train.sh $OUT --photos .photos/polyhaven --teacher .photos/AGCM.pth",
#                    carry=[".photos"], timeout_s=560)
# .photos and the repository make 60.4 of the 64 MiB (63.4 with two init files: too tight), so better starting
# points than the shipped files (unshipped CPU runs of the real SR styles, say) travel with the
# wheels in call 1, in .gpu-init/ (kept by the machine like .gpu-site):
#   call 1:      carry=[".whl", ".gpu-init"];  call 2: … --init sr4-itm-real=.gpu-init/sr4-real.safetensors
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/gpu-env.sh
. "$REPO/scripts/gpu-env.sh"

if [ "${1:-}" = "--install-wheels" ]; then
  gpu_install_wheels "$GPU_SITE" && echo "installed $(ls "$WHEELS"/*.whl | wc -l) wheels into $GPU_SITE"
  exit $?
fi

gpu_start gpu-train "scripts/gpu-train.sh OUTDIR --photos DIR [--teacher AGCM.pth] [--budget S] [--runs A,B] [--dry-run] | --install-wheels" "${1:-}"
OUT="$1"
shift
timeout --kill-after=10 540 "$PY" "$REPO/scripts/gpu_train.py" "$OUT" "$@" 2>&1 | tee "$OUT/gpu-train.log"
exit "${PIPESTATUS[0]}"
