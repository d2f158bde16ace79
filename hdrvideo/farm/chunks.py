"""Chunked conversion of one film: split at keyframes, convert the parts anywhere, join.

1. **Plan** (:func:`plan_chunks`): one pass over the video packets (no decoding) finds the
   *clean* cut points: keyframes before which every packet (in decode order) is presented
   earlier and from which every packet is presented at or after the keyframe. Cutting there
   splits decode order and presentation order identically, so no frame is lost or doubled
   by B-frame reordering or open GOPs. The cuts nearest to equal frame counts are chosen.
2. **Split** (:func:`split_source`): the video packets are stream-copied into one MOV per
   chunk, all timestamps of a chunk shifted by the same whole number of ticks so that its
   first frame is at 0 (MOV keeps the time base exactly, or an exact multiple of it, and
   relative — also VFR — timestamps exactly; an absolute start offset it would round to the
   millisecond of its movie time scale, so none is left for it to store).
3. **Convert** (:func:`convert_chunk`, run by an engine): each chunk is an ordinary
   :class:`~hdrvideo.pipeline.Pipeline` conversion without audio. The worker checks the
   frame count.
4. **Join** (:func:`join_chunks`): the converted parts are stream-copied one after the other
   into one video-only MP4, each shifted by its exact offset from the film's first frame
   (from the plan), whose HDR10 container metadata is given MaxCLL/MaxFALL = the maxima over
   all chunks (the HEVC SEI says 0,0 = unknown in every chunk, so it needs no change); then
   :func:`hdrvideo.media.mux.mux_final` adds the source's audio and subtitles once, over the
   whole duration, exactly as a one-piece conversion does.

**Fixed GOPs** (``--keyint N``): the output must have a keyframe exactly every N frames across
the joins, so the chunk boundaries are put on multiples of N frames of the film (in
presentation order), not on the source's keyframes. Each chunk then holds the source packets
from the last clean cut at or before its first frame to the first clean cut at or after its
end, and its worker decodes that span but converts only its own frames
(``ConvertOptions.frame_range``); neighbouring chunks overlap by at most one source GOP of
decoding. Every chunk but the last is a multiple of N frames long and starts with a keyframe,
so the joined file has the same GOP structure as a one-piece encode.

Limits: the input must carry timestamps on every video packet and no edit list that hides
frames (then: convert in one piece); ``start``/``duration`` are not combined with chunks.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import av

from .. import signals
from ..errors import EncoderError, InputError, OutputExistsError, UnsupportedInputError, UsageError
from ..fsutil import make_work_dir, remove_stale_work_dirs
from ..media.hdr10_boxes import MasteringMetadata
from ..media.mux import MuxOptions, MuxResult, StreamWindow, mux_final
from ..media.probe import VideoInfo, open_input, probe, require_sdr_video
from ..pipeline import (
    WORK_SUFFIXES,
    ConvertOptions,
    Pipeline,
    ProgressEvent,
    Report,
    check_output_path,
    default_output,
    deinterlace_settings,
    deinterlaced_rate_factor,
    detected_deinterlace,
    input_notices,
    input_video,
)
from ..presets import Preset, load_preset
from .engines import Engine, make_engine

__all__ = [
    "Chunk",
    "ChunkPlan",
    "ChunkedReport",
    "plan_chunks",
    "split_source",
    "convert_chunk",
    "join_chunks",
    "convert_chunked",
]

log = logging.getLogger(__name__)

TRANSFERS = ("shared", "object-store")


@dataclass(frozen=True)
class Chunk:
    index: int
    first_packet: int  # decode-order index of its first video packet
    end_packet: int  # exclusive
    start: Fraction  # presentation time of its first frame (source seconds)
    frames: int
    first_pts: int  # the chunk file's timestamps are shifted by it (its first packet's time, in ticks)
    skip: int = 0  # decoded frames before its first frame (fixed-GOP chunks overlap their neighbours)


@dataclass
class ChunkPlan:
    source: str
    stream_index: int
    time_base: Fraction
    origin: Fraction  # presentation time of the film's first frame: t = 0 of the output
    frames: int
    chunks: list[Chunk]
    warnings: list[str] = field(default_factory=list)


@dataclass
class ChunkedReport(Report):
    """A :class:`~hdrvideo.pipeline.Report` plus what each chunk did."""

    chunks: list[dict[str, Any]] = field(default_factory=list)
    engine: str = "local"


#: why a telecined film is not split (the warning of :func:`_convert_whole`)
WHOLE_STREAM_IVTC = ("3:2 inverse telecine (--deinterlace ivtc) needs the whole stream: converted in one piece "
                     "on this machine, not in chunks")


def _convert_whole(src: str, dst: str, opts: ConvertOptions, on_commit: Callable[[], None] | None) -> ChunkedReport:
    """The film converted in one piece, as ``hdrvideo convert`` would, with one warning saying so."""
    log.warning("%s", WHOLE_STREAM_IVTC)
    report = Pipeline(src, dst, opts).run(on_commit=on_commit)
    values = {f.name: getattr(report, f.name) for f in dataclasses.fields(Report)}
    values["warnings"] = [WHOLE_STREAM_IVTC] + list(report.warnings)
    return ChunkedReport(**values, chunks=[{"index": 0, "start_s": 0.0, "frames": report.frames,
                                            "max_cll": report.max_cll, "max_fall": report.max_fall,
                                            "seconds": report.seconds}], engine="local")


# --------------------------------------------------------------------------------------
# plan and split
# --------------------------------------------------------------------------------------


def _scan(src: str, video: VideoInfo) -> tuple[list[int], list[bool]]:
    pts: list[int] = []
    keys: list[bool] = []
    with open_input(src) as container:
        stream = container.streams[video.index]
        try:
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                if packet.pts is None:
                    raise UnsupportedInputError(
                        f"video packet {len(pts)} of {src} has no timestamp; chunked conversion needs timestamps "
                        "(convert in one piece)")
                if packet.is_discard:
                    raise UnsupportedInputError(
                        f"{src} has an edit list that hides frames; chunked conversion cannot reproduce it "
                        "(convert in one piece)")
                pts.append(int(packet.pts))
                keys.append(bool(packet.is_keyframe))
        except av.error.FFmpegError as err:
            raise InputError(f"cannot read the video packets of {src}: {err.strerror or err}") from err
    if not pts:
        raise InputError(f"no video packets in {src}")
    return pts, keys


def clean_cuts(pts: list[int], keys: list[bool]) -> list[int]:
    """Decode-order indices where a cut splits presentation order identically (see module doc)."""
    n = len(pts)
    suffix_min = [0] * n
    m = pts[-1]
    for i in range(n - 1, -1, -1):
        m = min(m, pts[i])
        suffix_min[i] = m
    cuts = []
    prefix_max = pts[0]
    for d in range(1, n):
        if keys[d] and prefix_max < pts[d] and suffix_min[d] >= pts[d]:
            cuts.append(d)
        prefix_max = max(prefix_max, pts[d])
    return cuts


def plan_chunks(src: str | os.PathLike[str], chunks: int, video: VideoInfo | None = None,
                keyint: int = 0) -> ChunkPlan:
    """Choose up to ``chunks`` parts of about equal frame counts, cut at clean keyframes — or,
    with ``keyint``, at multiples of ``keyint`` frames (see the module doc)."""
    if chunks < 1:
        raise UsageError("--chunks must be ≥ 1")
    src = str(src)
    if video is None:
        video = require_sdr_video(probe(src))
    pts, keys = _scan(src, video)
    tb = Fraction(video.time_base)
    n = len(pts)
    candidates = clean_cuts(pts, keys)
    if keyint:
        return _plan_gop_aligned(src, video, pts, candidates, chunks, keyint)
    chosen: list[int] = []
    for j in range(1, chunks):
        target = j * n / chunks
        best = None
        for d in candidates:
            if chosen and d <= chosen[-1]:
                continue
            if best is None or abs(d - target) < abs(best - target):
                best = d
        if best is not None and (not chosen or best > chosen[-1]):
            chosen.append(best)
    chosen = sorted(set(chosen))
    warnings = []
    if len(chosen) + 1 < chunks:
        msg = (f"only {len(chosen) + 1} chunk(s) possible: the video has {len(candidates)} clean keyframe cut(s) "
               f"for {chunks} requested")
        log.warning("%s", msg)
        warnings.append(msg)
    bounds = [0] + chosen + [n]
    parts = []
    for i in range(len(bounds) - 1):
        a, b = bounds[i], bounds[i + 1]
        first = min(pts[a:b])
        parts.append(Chunk(i, a, b, Fraction(first) * tb, b - a, first))
    return ChunkPlan(src, video.index, tb, Fraction(min(pts)) * tb, n, parts, warnings)


def _plan_gop_aligned(src: str, video: VideoInfo, pts: list[int], cuts: list[int], chunks: int,
                      keyint: int) -> ChunkPlan:
    tb = Fraction(video.time_base)
    n = len(pts)
    ordered = sorted(pts)
    bounds = [0]
    for j in range(1, chunks):
        target = j * n / chunks
        k = max(1, round(target / keyint)) * keyint
        if bounds[-1] < k < n:
            bounds.append(k)
    warnings = []
    if len(bounds) < chunks:
        msg = (f"only {len(bounds)} chunk(s) possible: {n} frames hold {max(1, -(-n // keyint))} GOP(s) of "
               f"{keyint} frames for {chunks} requested")
        log.warning("%s", msg)
        warnings.append(msg)
    bounds.append(n)
    starts = [0] + cuts  # clean cut d: the first d packets are the first d frames presented
    ends = cuts + [n]
    parts = []
    for i in range(len(bounds) - 1):
        a, b = bounds[i], bounds[i + 1]
        first = max(c for c in starts if c <= a)
        end = min(c for c in ends if c >= b)
        parts.append(Chunk(i, first, end, Fraction(ordered[a]) * tb, b - a, ordered[first], a - first))
    return ChunkPlan(src, video.index, tb, Fraction(ordered[0]) * tb, n, parts, warnings)


def split_source(plan: ChunkPlan, workdir: str | os.PathLike[str]) -> list[str]:
    """Stream-copy the video packets of each chunk into ``workdir/chunk_NNNN.mov``.

    A codec MOV cannot hold (FFV1, …) goes into Matroska instead when the source's time base
    is whole milliseconds (Matroska's), so no timestamp is rounded; otherwise it is an error.
    """
    try:
        return _split(plan, workdir, "mov")
    except UnsupportedInputError:
        if (plan.time_base / Fraction(1, 1000)).denominator != 1:
            raise
        log.info("splitting into Matroska chunks (the codec does not fit in MOV)")
        return _split(plan, workdir, "matroska")


def _split(plan: ChunkPlan, workdir: str | os.PathLike[str], fmt: str) -> list[str]:
    ext = ".mov" if fmt == "mov" else ".mkv"
    paths = [os.path.join(workdir, f"chunk_{c.index:04d}{ext}") for c in plan.chunks]
    container = open_input(plan.source)
    outs: dict[int, tuple[Any, Any]] = {}  # chunk index → (container, stream); neighbours may overlap
    nxt = 0  # the next chunk to open
    try:
        stream = container.streams[plan.stream_index]
        index = 0
        for packet in container.demux(stream):
            if not packet.size:
                continue
            for k in [k for k in outs if index >= plan.chunks[k].end_packet]:
                outs.pop(k)[0].close()
            while nxt < len(plan.chunks) and plan.chunks[nxt].first_packet <= index:
                c = plan.chunks[nxt]
                out = av.open(paths[c.index], "w", format=fmt)
                try:
                    ostream = out.add_stream_from_template(stream)
                except (ValueError, av.error.FFmpegError) as err:
                    out.close()
                    raise UnsupportedInputError(
                        f"cannot split {stream.codec_context.name} video by stream copy ({err}); convert in one piece"
                    ) from err
                outs[c.index] = (out, ostream)
                nxt += 1
            owners = [k for k in outs if plan.chunks[k].first_packet <= index < plan.chunks[k].end_packet]
            for k in owners:
                out, ostream = outs[k]
                copy = packet
                if len(owners) > 1:  # muxing consumes a packet: each chunk gets its own copy
                    copy = av.Packet(bytes(packet))
                    copy.pts, copy.dts, copy.time_base = packet.pts, packet.dts, packet.time_base
                    copy.is_keyframe = packet.is_keyframe
                shift = plan.chunks[k].first_pts
                copy.pts -= shift
                if copy.dts is not None:
                    copy.dts -= shift
                copy.stream = ostream
                out.mux(copy)
            index += 1
        for k in list(outs):
            outs.pop(k)[0].close()
        if index != plan.frames:
            raise InputError(f"{plan.source} changed while splitting ({index} packets, planned {plan.frames})")
    except av.error.FFmpegError as err:
        raise UnsupportedInputError(f"cannot split {plan.source} by stream copy: {err.strerror or err}") from err
    finally:
        for out, _s in outs.values():
            try:
                out.close()
            except Exception:  # noqa: BLE001
                pass
        container.close()
    return paths


# --------------------------------------------------------------------------------------
# one chunk (runs in a worker)
# --------------------------------------------------------------------------------------


def convert_chunk(item: dict[str, Any], progress: Callable[[Any], None]) -> dict[str, Any]:
    """Convert one chunk. ``item``: index, input (path) or input_data (bytes), output (path;
    None = return ``output_data`` bytes), options (:class:`ConvertOptions`), frames."""
    index = item["index"]
    tmp = None
    try:
        src = item.get("input")
        dst = item.get("output")
        if item.get("input_data") is not None or dst is None:
            tmp = tempfile.mkdtemp(prefix=f"hdrvideo-chunk{index:04d}-")
        if item.get("input_data") is not None:
            src = os.path.join(tmp, "chunk" + item.get("suffix", ".mov"))
            with open(src, "wb") as fh:
                fh.write(item["input_data"])
        if dst is None:
            dst = os.path.join(tmp, "part.mp4")

        def forward(event: ProgressEvent) -> None:
            progress({"frame": event.frame, "stage": event.stage})

        opts = dataclasses.replace(
            item["options"], copy_audio=False, copy_subtitles=False, force=True, start=None, duration=None,
            # captions ride in the video bitstream: each part carries its frames' own
            copy_captions=(item["options"].copy_subtitles if item["options"].copy_captions is None
                           else item["options"].copy_captions),
            progress=forward, fragmented=False, frame_range=item.get("frame_range"),
        )
        with _warnings_to(progress):
            report = Pipeline(src, dst, opts).run()
        if report.frames != item["frames"]:
            raise EncoderError(f"chunk {index}: {report.frames} frames converted, {item['frames']} expected "
                               "(a damaged input? convert it in one piece)")
        result: dict[str, Any] = {"index": index, "report": report.to_dict(), "output": item.get("output")}
        if item.get("output") is None:
            with open(dst, "rb") as fh:
                result["output_data"] = fh.read()
        return result
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


class _Forward(logging.Handler):
    def __init__(self, progress: Callable[[Any], None]) -> None:
        super().__init__(logging.WARNING)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.progress({"warning": record.getMessage()})
        except Exception:  # noqa: BLE001
            self.handleError(record)


class _warnings_to:
    """While converting a chunk, hdrvideo's warnings go to the driver (through ``progress``),
    which shows each distinct one once, instead of every worker printing its own copy."""

    def __init__(self, progress: Callable[[Any], None]) -> None:
        self.handler = _Forward(progress)
        self.logger = logging.getLogger("hdrvideo")

    def __enter__(self) -> None:
        self.propagate = self.logger.propagate
        self.logger.addHandler(self.handler)
        self.logger.propagate = False

    def __exit__(self, *exc: Any) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.propagate = self.propagate


# --------------------------------------------------------------------------------------
# join
# --------------------------------------------------------------------------------------


def join_video(parts: list[str], offsets: list[Fraction], joined: str) -> int:
    """Concatenate the video of converted parts into a video-only MP4, part *k* shifted by
    ``offsets[k]`` seconds (its first frame's time on the film's timeline).

    Returns the number of packets. Decode timestamps are kept, except that a part whose first
    DTS does not follow the previous part's last one (possible with VFR) is nudged forward
    by the fewest ticks; a nudge that would pass a presentation time is an error.
    """
    inputs = [av.open(p) for p in parts]
    out = None
    count = 0
    try:
        template = inputs[0].streams.video[0]
        out = av.open(joined, "w", format="mp4")
        ostream = out.add_stream_from_template(template)
        ostream.codec_tag = "hvc1"
        tb_out = template.time_base
        last_dts = None
        for k, container in enumerate(inputs):
            stream = container.streams.video[0]
            tb = stream.time_base
            scale = Fraction(tb) / Fraction(tb_out)
            if scale.denominator != 1:
                raise EncoderError(f"cannot join chunk {k}: time base {tb} is not a multiple of {tb_out}")
            ticks = Fraction(offsets[k]) / Fraction(tb_out)
            shift = round(ticks)
            if ticks != shift:
                log.warning("chunk %d starts between two ticks of %s; rounded", k, tb_out)
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                pts = packet.pts * scale.numerator + shift if packet.pts is not None else None
                dts = packet.dts * scale.numerator + shift if packet.dts is not None else pts
                if last_dts is not None and dts is not None and dts <= last_dts:
                    dts = last_dts + 1
                    if pts is not None and dts > pts:
                        raise EncoderError(f"cannot join chunk {k}: its decode times overlap the previous chunk's")
                packet.pts, packet.dts = pts, dts
                packet.time_base = tb_out
                packet.stream = ostream
                out.mux(packet)
                last_dts = dts
                count += 1
        out.close()
        out = None
    except av.error.FFmpegError as err:
        raise EncoderError(f"joining chunks into {joined} failed: {err.strerror or err}") from err
    finally:
        if out is not None:
            try:
                out.close()
            except Exception:  # noqa: BLE001
                pass
        for c in inputs:
            c.close()
    return count


def join_chunks(plan: ChunkPlan, parts: list[str], output: str, meta: MasteringMetadata, workdir: str,
                copy_audio: bool = True, copy_subtitles: bool = True, frames_per_frame: int = 1,
                options: MuxOptions | None = None) -> MuxResult:
    """Join converted parts and mux the source's audio/subtitles once into ``output``.

    ``frames_per_frame`` is 2 when the parts were deinterlaced to one frame per field.
    """
    joined = os.path.join(workdir, "joined.mp4")
    packets = join_video(parts, [c.start - plan.origin for c in plan.chunks], joined)
    if packets != plan.frames * frames_per_frame:
        raise EncoderError(f"joined video has {packets} frames, expected {plan.frames * frames_per_frame}")
    window = StreamWindow(offset=plan.origin, end=None)
    return mux_final(joined, plan.source, output, meta, window, copy_audio, copy_subtitles, options)


# --------------------------------------------------------------------------------------
# the whole thing
# --------------------------------------------------------------------------------------


class _Aggregate:
    """Turns per-chunk frame counts into film-level :class:`ProgressEvent` s."""

    def __init__(self, total: int, sink: Callable[[ProgressEvent], None] | None, t0: float) -> None:
        self.total = total
        self.sink = sink
        self.t0 = t0
        self.done: dict[int, int] = {}
        self.last = 0.0

    def frames(self) -> int:
        return sum(self.done.values())

    def update(self, index: int, frames: int, force: bool = False) -> None:
        self.done[index] = frames
        now = time.perf_counter()
        if self.sink is None or (not force and now - self.last < 0.5):
            return
        self.last = now
        done = self.frames()
        elapsed = now - self.t0
        fps = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / fps if fps > 0 else None
        self.sink(ProgressEvent(done, self.total, round(fps, 3), None if eta is None else round(max(eta, 0.0), 1),
                                "convert"))


def convert_chunked(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None = None,
    preset: str | Preset = "bt2408",
    *,
    chunks: int = 2,
    engine: str | Engine = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    gpus_per_task: float | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    transfer: str = "shared",
    keep_work: bool = False,
    on_commit: Callable[[], None] | None = None,
    **options: Any,
) -> ChunkedReport:
    """Convert ``src`` in up to ``chunks`` parts on an engine and join them (see the module doc).

    ``engine``: ``"local"`` (process pool; ``workers`` processes, default one per GPU),
    ``"ray"`` (``ray_address``; tasks declare ``gpus_per_task``), or an :class:`Engine`.
    ``work_dir``: where chunk files go (default: beside the output); with Ray on several
    machines it must be shared storage mounted at the same path everywhere, unless
    ``transfer="object-store"`` sends the chunk bytes through Ray's object store.
    ``on_commit`` is called right after the output is renamed into place, as in
    :meth:`Pipeline.run <hdrvideo.pipeline.Pipeline.run>`. Other keyword arguments are
    :class:`~hdrvideo.pipeline.ConvertOptions` fields.
    """
    t_start = time.perf_counter()
    opts = ConvertOptions(preset=preset)
    for key, value in options.items():
        if not hasattr(opts, key):
            raise UsageError(f"unknown option {key!r}")
        setattr(opts, key, value)
    if opts.start is not None or opts.duration is not None:
        raise UsageError("--start/--duration cannot be combined with --chunks")
    if transfer not in TRANSFERS:
        raise UsageError(f"unknown chunk transfer {transfer!r} (choose {' or '.join(TRANSFERS)})")
    src = str(src)
    dst = str(dst) if dst is not None else str(default_output(src))
    check_output_path(src, dst, opts.force)
    Pipeline(src, dst, opts)._check_options()
    info = probe(src)
    video = input_video(info, opts)
    preset_obj = (opts.preset if isinstance(opts.preset, Preset) else load_preset(opts.preset)).resolve(video.height)
    # the whole film's plan, once: every chunk gets the same crop and keyframe interval (in
    # frames), and a bad option fails here, before anything is split
    film = Pipeline(src, dst, dataclasses.replace(opts, progress=None)).plan()
    if film.deinterlace is not None and film.deinterlace[0] == "ivtc":
        # fieldmatch needs each chunk's neighbouring fields and decimate a whole cycle of five
        # (its output count is the cadence's, not 4/5 of any cut): one piece, here
        return _convert_whole(src, dst, opts, on_commit)
    keyint = int(film.preset.encode.keyint)  # output frames
    fields = int(deinterlaced_rate_factor(film.deinterlace))  # output frames per source frame: 1 or 2
    plan = plan_chunks(src, chunks, video, keyint=math.lcm(keyint, fields) // fields if keyint else 0)  # source frames
    sink = opts.progress
    # deinterlacing is decided once for the film, not per chunk; it gives one frame per field
    deinterlace = deinterlace_settings(video, detected_deinterlace(info.path, video, opts.deinterlace))
    per_frame = int(deinterlaced_rate_factor(deinterlace))
    notices = input_notices(info, video, preset_obj, opts, deinterlace)
    # every chunk deinterlaces as the film does (field matching frame for frame, or bwdif)
    mode = ("fieldmatch" if deinterlace[0] == "fieldmatch" else "on") if deinterlace else "off"
    task_opts = dataclasses.replace(opts, progress=None, deinterlace=mode,
                                    keyint=keyint or None, crop=str(film.crop) if film.crop else "none")

    own_engine = not hasattr(engine, "run")
    eng: Engine = make_engine(engine, workers, tasks=len(plan.chunks), device=opts.device, ray_address=ray_address,
                              gpus_per_task=gpus_per_task) if own_engine else engine  # type: ignore[arg-type]
    if transfer == "object-store" and eng.name != "ray":
        if own_engine:
            eng.close()
        raise UsageError("--chunk-transfer object-store needs --engine ray")
    base = str(work_dir) if work_dir is not None else os.path.dirname(os.path.abspath(dst))
    workdir = None
    stages: dict[str, float] = {}
    seen_warnings = set(plan.warnings)

    def on_progress(index: int, payload: dict[str, Any]) -> None:
        if "warning" in payload:
            if payload["warning"] not in seen_warnings:  # each distinct warning once, not once per chunk
                seen_warnings.add(payload["warning"])
                # straight to the root handlers: an in-process chunk's capture must not take it back
                logging.getLogger().handle(log.makeRecord(log.name, logging.WARNING, __file__, 0,
                                                          payload["warning"], (), None))
        elif sink and "frame" in payload:
            agg.update(index, int(payload["frame"]))

    try:
        with signals.critical():
            try:
                os.makedirs(base, exist_ok=True)
                remove_stale_work_dirs(base, WORK_SUFFIXES)
                workdir = make_work_dir(base, f".{Path(dst).name}.", WORK_SUFFIXES[1])
            except OSError as err:
                raise UsageError(f"cannot create a work directory in {base}: {err.strerror or err}") from err
        if sink:
            sink(ProgressEvent(0, plan.frames, 0.0, None, "convert"))
        t0 = time.perf_counter()
        paths = split_source(plan, workdir)
        stages["split"] = time.perf_counter() - t0
        items = []
        for c, path in zip(plan.chunks, paths):
            item: dict[str, Any] = {"index": c.index, "options": task_opts, "frames": c.frames * per_frame}
            if keyint:
                item["frame_range"] = (c.skip * per_frame, c.frames * per_frame)
            if transfer == "object-store":
                with open(path, "rb") as fh:
                    item["input_data"] = fh.read()
                item["suffix"] = Path(path).suffix
                item["input"] = None
                item["output"] = None
            else:
                item["input"] = path
                item["output"] = os.path.join(workdir, f"part_{c.index:04d}.mp4")
            items.append(item)

        agg = _Aggregate(plan.frames * per_frame, sink, t_start)
        results: dict[int, dict[str, Any]] = {}
        t0 = time.perf_counter()
        runs = eng.run(convert_chunk, items, on_progress=on_progress)
        try:
            for r in runs:
                if not r.ok:  # one failed chunk fails the film; the others are stopped
                    if isinstance(r.error, BaseException):
                        raise r.error
                    raise EncoderError(f"chunk {r.index} failed")
                results[r.index] = r.value
                agg.update(r.index, plan.chunks[r.index].frames * per_frame, force=True)
        finally:
            runs.close()  # type: ignore[attr-defined]
        stages["convert"] = time.perf_counter() - t0

        parts = []
        for c in plan.chunks:
            res = results[c.index]
            part = res.get("output") or os.path.join(workdir, f"part_{c.index:04d}.mp4")
            if res.get("output_data") is not None:
                with open(part, "wb") as fh:
                    fh.write(res.pop("output_data"))
            parts.append(part)
        reports = [results[c.index]["report"] for c in plan.chunks]
        m = preset_obj.mastering
        meta = MasteringMetadata(m.primaries, m.max_luminance, m.min_luminance,
                                 max_cll=max(r["max_cll"] for r in reports), max_fall=max(r["max_fall"] for r in reports))
        if sink:
            total = plan.frames * per_frame
            sink(ProgressEvent(total, total, round(total / max(time.perf_counter() - t_start, 1e-9), 3), 0.0, "mux"))
        t0 = time.perf_counter()
        final_tmp = os.path.join(workdir, "output" + Path(dst).suffix.lower())
        mux = join_chunks(plan, parts, final_tmp, meta, workdir, opts.copy_audio, opts.copy_subtitles, per_frame,
                          film.mux)
        stages["mux"] = time.perf_counter() - t0
        if os.path.exists(dst) and not opts.force:
            raise OutputExistsError(f"output appeared while converting: {dst} (use --force to overwrite)")
        with signals.critical():
            os.replace(final_tmp, dst)
            if on_commit is not None:
                on_commit()
    finally:
        with signals.critical():
            if own_engine:
                eng.close()
            if workdir is None:
                pass
            elif keep_work:
                log.info("chunk files kept in %s", workdir)
            else:
                shutil.rmtree(workdir, ignore_errors=True)

    seconds = time.perf_counter() - t_start
    warnings = list(plan.warnings) + notices + list(film.notes)
    for r in reports:
        for w in r["warnings"]:
            if w not in warnings and not w.startswith("assumed "):
                warnings.append(w)
    warnings += mux.skipped
    first = reports[0]
    frames = plan.frames * per_frame
    report = ChunkedReport(
        input=info.path, output=dst, preset=first["preset"], processor=first["processor"], encoder=first["encoder"],
        frames=frames, seconds=round(seconds, 3), fps=round(frames / seconds, 3) if seconds > 0 else 0.0,
        input_size=(video.width, video.height), output_size=tuple(first["output_size"]),  # type: ignore[arg-type]
        max_cll=meta.max_cll, max_fall=meta.max_fall,
        max_cll_measured=max(int(r.get("max_cll_measured") or r["max_cll"]) for r in reports),
        stage_seconds={k: round(v, 3) for k, v in stages.items()},
        warnings=warnings, streams_copied=mux.copied,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        input_colour=first.get("input_colour", {}),
        chunks=[{"index": c.index, "start_s": round(float(c.start), 6), "frames": c.frames * per_frame,
                 "max_cll": r["max_cll"], "max_fall": r["max_fall"], "seconds": r["seconds"]}
                for c, r in zip(plan.chunks, reports)],
        engine=eng.name, crop=str(film.crop) if film.crop else "",
        style=first.get("style", ""), sample_aspect=first.get("sample_aspect", ""),
    )
    if sink:
        sink(ProgressEvent(report.frames, report.frames, report.fps, 0.0, "done"))
    return report
