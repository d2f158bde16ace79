#!/usr/bin/env python3
"""Banding of 8-bit smooth gradients expanded to HDR10, per preset, against FFmpeg's libplacebo.

    python scripts/banding_check.py [--size 640x360] [--presets bt2408,hdr-expand,itm,...]
                                    [--deband auto,off] [--crf 2] [--libplacebo] [--json]

For each test gradient of :mod:`hdrvideo.banding` (``dark``: a near-black horizontal ramp;
``sky``: a vertical blue-to-pale ramp), an 8-bit BT.709 4:2:0 lossless clip is written and
converted by every preset at the given CRF with each ``--deband`` mode. Each output is scored
with the mean step height of its decoded 10-bit Y' along the gradient (codes; a smooth 10-bit
ramp gives 1) and, when the FFmpeg of ``imageio-ffmpeg`` is installed, CAMBI (libvmaf, PQ EOTF;
≥ 5 is where banding starts to annoy). The bars of issue 12: CAMBI ≤ 5 and step ≤ 1.5 with
``--deband auto``. ``--libplacebo`` adds FFmpeg's ``libplacebo`` inverse tone mapping (needs a
Vulkan driver, e.g. Mesa's lavapipe) encoded with the same x265 settings.

Neural presets use whatever weights are installed (engines/), so rerun this after retraining.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hdrvideo.banding import GRADIENTS, cambi, decoded_luma, imageio_ffmpeg_exe, step_height, write_gradient_clip  # noqa: E402

DEFAULT_PRESETS = "bt2408,hdr-expand,itm,sr2-itm,sr4-itm,sr4-itm-gpgm"


def score(path: Path, axis: str, eotf: str = "pq") -> dict:
    ys = decoded_luma(path)
    steps = [step_height(y, axis) for y in ys]
    res = {"step": round(sum(steps) / len(steps), 3), "size": f"{ys[0].shape[1]}x{ys[0].shape[0]}"}
    c = cambi(path, eotf=eotf)
    res["cambi"] = None if c is None else round(c, 3)
    return res


def libplacebo_convert(src: Path, dst: Path, crf: float, tonemapping: str = "auto") -> None:
    exe = imageio_ffmpeg_exe()
    vf = ("libplacebo=inverse_tonemapping=1:tonemapping=" + tonemapping + ":peak_detect=0:"
          "colorspace=bt2020nc:color_primaries=bt2020:color_trc=smpte2084:range=limited:format=yuv420p10le")
    cmd = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-init_hw_device", "vulkan=vk:0",
           "-filter_hw_device", "vk", "-i", str(src), "-vf", vf, "-c:v", "libx265", "-crf", str(crf),
           "-preset", "medium", "-x265-params", "log-level=error", "-color_primaries", "bt2020",
           "-color_trc", "smpte2084", "-colorspace", "bt2020nc", "-color_range", "tv", str(dst)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "ffmpeg failed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--presets", default=DEFAULT_PRESETS)
    ap.add_argument("--deband", default="auto,off", help="comma-separated deband modes to run")
    ap.add_argument("--crf", type=float, default=2.0)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--gradients", default=",".join(GRADIENTS))
    ap.add_argument("--libplacebo", action="store_true", help="also FFmpeg libplacebo inverse tone mapping")
    ap.add_argument("--out", type=Path, help="keep the clips here (default: a temporary folder)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import hdrvideo

    w, h = (int(v) for v in args.size.lower().split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for kind in args.gradients.split(","):
            axis = GRADIENTS[kind][0]
            src = write_gradient_clip(out / f"{kind}-{w}x{h}.mkv", kind, w, h, args.frames)
            rows.append({"gradient": kind, "method": "source (8-bit, BT.1886)", "deband": "-", **score(src, axis, "bt1886")})
            for preset in args.presets.split(","):
                for mode in args.deband.split(","):
                    dst = out / f"{kind}-{preset}-{mode}.mkv"
                    t0 = time.perf_counter()
                    try:
                        rep = hdrvideo.convert(src, dst, preset=preset, crf=args.crf, deband=mode, force=True)
                    except hdrvideo.HdrvideoError as err:
                        rows.append({"gradient": kind, "method": preset, "deband": mode, "error": str(err)})
                        continue
                    rows.append({"gradient": kind, "method": preset, "deband": mode, **score(dst, axis),
                                 "max_cll": rep.max_cll, "seconds": round(time.perf_counter() - t0, 1)})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            if args.libplacebo:
                for tm in ("auto", "bt.2446a"):
                    dst = out / f"{kind}-libplacebo-{tm}.mkv"
                    try:
                        libplacebo_convert(src, dst, args.crf, tm)
                    except (RuntimeError, OSError, TypeError) as err:
                        rows.append({"gradient": kind, "method": f"libplacebo ({tm})", "deband": "-", "error": str(err)})
                        continue
                    rows.append({"gradient": kind, "method": f"libplacebo ({tm})", "deband": "-", **score(dst, axis)})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'gradient':8s} {'method':24s} {'deband':6s} {'step':>6s} {'CAMBI':>6s} {'MaxCLL':>7s}  (CRF {args.crf:g}, {w}x{h} in)")
    for r in rows:
        if "error" in r:
            print(f"{r['gradient']:8s} {r['method']:24s} {r['deband']:6s} error: {r['error']}")
            continue
        c = "-" if r.get("cambi") is None else f"{r['cambi']:.2f}"
        print(f"{r['gradient']:8s} {r['method']:24s} {r['deband']:6s} {r['step']:6.2f} {c:>6s} {str(r.get('max_cll', '-')):>7s}")


if __name__ == "__main__":
    main()
