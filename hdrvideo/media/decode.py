"""Decode stage: PyAV frames → batches of raw integer planes (no colour conversion here).

Planes are copied straight out of the decoded frames into (optionally pinned) batch buffers;
Y'CbCr→R'G'B' happens later on the processing device (:func:`hdrvideo.colour.planes_to_rgb`),
so swscale's BT.601 default never touches the pixels.

Damaged input is decoded as FFmpeg's own tools do: a packet the decoder rejects is skipped
and decoding resumes at the next frame that decodes, timestamps untouched; one warning counts
the frames lost. A stream that ends before its container says it should (a truncated file)
is converted as far as it goes, with a warning. Interlaced video is deinterlaced here, before
any processing, by FFmpeg's ``bwdif`` in an ``av.filter.Graph`` (:class:`Deinterlacer`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator

import av
import numpy as np
import torch

from ..errors import InputError, UnsupportedInputError
from .captions import CaptionRetimer
from .probe import A53_CAPTIONS, VideoInfo, close_decoding, open_input

__all__ = ["PlaneLayout", "FrameBatch", "Decoder", "Deinterlacer", "PulldownRetimer", "decoder_time_base",
           "deinterlaced_rate", "IVTC_CYCLE", "parse_time"]

log = logging.getLogger(__name__)

_PLANAR_YUV = re.compile(r"^(yuvj?)(420|422|444|440|411|410)p(\d+)?(le)?$")
_GRAY = re.compile(r"^gray(\d+)?(le)?$")
_SUBSAMPLING = {"420": (2, 2), "422": (2, 1), "444": (1, 1), "440": (1, 2), "411": (4, 1), "410": (4, 2)}


#: the largest accepted --start/--duration, in seconds (about 115 days)
MAX_TIME = 10**7


def parse_time(value: str | float | int | None) -> Fraction | None:
    """Seconds (``"12.5"``) or ``[HH:]MM:SS[.ms]`` → seconds as a Fraction; None passes through."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        try:
            t = Fraction(value).limit_denominator(1_000_000)
        except (ValueError, OverflowError):  # NaN, infinity
            raise InputError(f"invalid time {value!r}: use seconds (12.5) or HH:MM:SS.ms") from None
    else:
        text = value.strip()
        try:
            parts = text.split(":")
            if len(parts) > 3:
                raise ValueError
            t = Fraction(0)
            for part in parts:
                t = t * 60 + Fraction(part)
        except (ValueError, ZeroDivisionError):
            raise InputError(f"invalid time {value!r}: use seconds (12.5) or HH:MM:SS.ms") from None
    if t < 0:
        raise InputError(f"invalid time {value!r}: must not be negative")
    if t > MAX_TIME:
        raise InputError(f"invalid time {value!r}: more than {MAX_TIME} seconds")
    return t


@dataclass(frozen=True)
class PlaneLayout:
    """How the integer planes of a batch are to be interpreted."""

    kind: str  # "yuv", "gray" or "rgb"
    pix_fmt: str  # the planar format the planes are in
    bit_depth: int
    subsampling: tuple[int, int]  # (horizontal, vertical) chroma factors
    width: int
    height: int

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.bit_depth <= 8 else np.uint16)

    def plane_shapes(self) -> list[tuple[int, int]]:
        if self.kind == "gray":
            return [(self.height, self.width)]
        sx, sy = self.subsampling
        c = (-(-self.height // sy), -(-self.width // sx))
        return [(self.height, self.width), c, c]


def layout_for(pix_fmt: str, width: int, height: int, is_rgb: bool) -> PlaneLayout:
    """The planar layout frames of ``pix_fmt`` are read in (reformatting non-planar ones)."""
    m = _PLANAR_YUV.match(pix_fmt)
    if m and (m.group(3) is None or m.group(4)):
        depth = int(m.group(3) or 8)
        return PlaneLayout("yuv", pix_fmt, depth, _SUBSAMPLING[m.group(2)], width, height)
    g = _GRAY.match(pix_fmt)
    if g and (g.group(1) is None or g.group(2)):
        return PlaneLayout("gray", pix_fmt, int(g.group(1) or 8), (1, 1), width, height)
    try:
        fmt = av.VideoFormat(pix_fmt)
        depth = max(c.bits for c in fmt.components)
    except (ValueError, av.error.FFmpegError):
        raise UnsupportedInputError(f"unsupported pixel format {pix_fmt}") from None
    if is_rgb or fmt.is_rgb:
        return PlaneLayout("rgb", "gbrp" if depth <= 8 else "gbrp16le", 8 if depth <= 8 else 16, (1, 1), width, height)
    # packed / semi-planar Y'CbCr (nv12, p010, yuyv422, …): repack to planar, same subsampling
    cw = fmt.chroma_width(width) or width
    ch = fmt.chroma_height(height) or height
    sx, sy = max(1, round(width / cw)), max(1, round(height / ch))
    sub = {v: k for k, v in _SUBSAMPLING.items()}.get((sx, sy), "444")
    if depth <= 8:
        return PlaneLayout("yuv", f"yuv{sub}p", 8, _SUBSAMPLING[sub], width, height)
    return PlaneLayout("yuv", f"yuv{sub}p16le", 16, _SUBSAMPLING[sub], width, height)


@dataclass
class FrameBatch:
    """N decoded frames of one size: integer planes (N,h,w) each, and their timestamps."""

    planes: list[torch.Tensor]
    pts: list[int]
    first_index: int
    release: object = None  # callback returning the buffers to the pool

    @property
    def size(self) -> int:
        return len(self.pts)


class _BufferPool:
    """A fixed ring of batch buffers (pinned when feeding a GPU); bounds host memory."""

    def __init__(self, layout: PlaneLayout, batch: int, count: int, pin: bool) -> None:
        import queue

        self._free: queue.Queue = queue.Queue()
        torch_dtype = torch.uint8 if layout.bit_depth <= 8 else torch.int16  # uint16 bits, viewed as int16
        for _ in range(count):
            bufs = [torch.empty((batch, *shape), dtype=torch_dtype, pin_memory=pin) for shape in layout.plane_shapes()]
            self._free.put(bufs)

    def get(self, timeout: float | None = None) -> list[torch.Tensor]:
        return self._free.get(timeout=timeout)

    def put(self, bufs: list[torch.Tensor]) -> None:
        self._free.put(bufs)


@dataclass
class DecodeStats:
    frames: int = 0  # frames handed out (after deinterlacing)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    rotation: int = 0
    packets: int = 0  # video packets with a payload sent to the decoder
    decoded: int = 0  # frames the decoder returned (before deinterlacing and the time window)
    errors: int = 0  # packets the decoder rejected
    lost: int = 0  # frames lost to damaged packets
    truncated: bool = False  # the demuxer stopped with an error
    captions: bool = False  # the video carries CEA-608/708 closed captions (A/53 side data)


#: inverse telecine keeps 4 of every 5 frames: 3:2 pulldown made 5 video frames of 4 film frames
IVTC_CYCLE = (4, 5)


def deinterlaced_rate(deint: str) -> Fraction:
    """Output frames per input frame of a :class:`Deinterlacer` mode: 2 (bwdif, a frame per
    field), 4/5 (``"ivtc"``: 29.97i telecined film back to 23.976p) or 1 (``"fieldmatch"``)."""
    return {"ivtc": Fraction(*IVTC_CYCLE), "fieldmatch": Fraction(1)}.get(deint, Fraction(2))


class Deinterlacer:
    """Deinterlacing with FFmpeg's filters: ``bwdif`` at the field rate, or inverse telecine.

    ``bwdif`` ("w3fdif and yadif combined", libavfilter/vf_bwdif.c) interpolates each missing
    field line from the spatial and temporal neighbours (the previous and next fields), and in
    ``send_field`` mode emits one progressive frame per field: 50i becomes 50p. It works in a
    time base of half the input's, so the second field's timestamp (half-way to the next
    frame) is exact: the output timestamps are the input's doubled, and the field frames
    between them. ``deint="all"`` deinterlaces every frame; ``"interlaced"`` only frames
    flagged interlaced (others pass once, at their own timestamp).

    ``deint="ivtc"`` undoes 3:2 pulldown (film at 23.976 frames/s carried as 29.97i, as on NTSC
    DVDs and broadcasts): ``fieldmatch`` rebuilds each film frame from the two fields that
    belong together, ``bwdif`` interpolates the frames it finds no match for (orphan fields at
    edits; they are flagged interlaced), and ``decimate`` drops the one duplicate in each cycle
    of five, the recipe of FFmpeg's filter documentation (fieldmatch). The output rate is the
    input's × 4/5, in a time base of one output frame (``decimate`` retimes the frames it keeps).
    ``deint="fieldmatch"`` is the same without ``decimate``, for 2:2 pulldown (film at 25 frames/s
    in 25i, whose fields may be paired across frames): every frame stays, at its own timestamp.

    ``parity`` is ``tff``, ``bff`` or ``auto`` (each frame's flag). The graph is built at the
    first frame, from that frame's size and pixel format, so nothing is converted on the way in.
    """

    def __init__(self, time_base: Fraction, deint: str = "all", parity: str = "auto",
                 rate: Fraction | None = None) -> None:
        if deint not in ("all", "interlaced", "ivtc", "fieldmatch") or parity not in ("tff", "bff", "auto"):
            raise ValueError(f"bad deinterlacer settings {deint!r}, {parity!r}")
        if deint == "ivtc" and not rate:
            raise ValueError("inverse telecine needs the input's frame rate")
        self.in_time_base = Fraction(time_base)
        self.rate = Fraction(rate) if rate else None
        if deint == "ivtc":
            assert self.rate is not None
            self.time_base = 1 / (self.rate * deinterlaced_rate(deint))
        elif deint == "fieldmatch":
            self.time_base = self.in_time_base  # fieldmatch keeps each frame's timestamp
        else:
            self.time_base = self.in_time_base / 2  # bwdif send_field: out time base = in / 2
        self.deint = deint
        self.parity = parity
        self.graph: av.filter.Graph | None = None

    @property
    def source_pts_scale(self) -> int | None:
        """Output timestamp of a source frame's (first) output frame = source timestamp × this;
        None when frames are dropped and retimed (``ivtc``)."""
        return {"ivtc": None, "fieldmatch": 1}.get(self.deint, 2)

    def _filters(self) -> list[tuple[str, str]]:
        if self.deint in ("all", "interlaced"):
            return [("bwdif", f"mode=send_field:parity={self.parity}:deint={self.deint}")]
        matched = [("fieldmatch", f"order={self.parity}:combmatch=full"),
                   ("bwdif", f"mode=send_frame:parity={self.parity}:deint=interlaced")]
        return matched + ([("decimate", f"cycle={IVTC_CYCLE[1]}")] if self.deint == "ivtc" else [])

    def _build(self, frame: av.VideoFrame) -> None:
        g = av.filter.Graph()
        tb = self.in_time_base
        # fieldmatch and decimate need the frame rate (decimate derives its output rate from it)
        rate = f":frame_rate={self.rate.numerator}/{self.rate.denominator}" if self.rate else ""
        node = g.add("buffer", f"video_size={frame.width}x{frame.height}:pix_fmt={frame.format.name}:"
                               f"time_base={tb.numerator}/{tb.denominator}:pixel_aspect=1/1:"
                               f"colorspace={frame.colorspace}:range={frame.color_range}{rate}")
        for name, args in self._filters():
            nxt = g.add(name, args)
            node.link_to(nxt)
            node = nxt
        sink = g.add("buffersink")
        node.link_to(sink)
        g.configure()
        self.graph = g

    def __call__(self, frame: av.VideoFrame | None) -> Iterator[av.VideoFrame]:
        """Push one decoded frame (None at the end) and yield the progressive frames ready."""
        if self.graph is None:
            if frame is None:
                return
            self._build(frame)
        assert self.graph is not None
        self.graph.vpush(frame)
        while True:
            try:
                out = self.graph.vpull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            tb = out.time_base
            if tb is not None and out.pts is not None and Fraction(tb) != self.time_base:
                out.pts = round(out.pts * Fraction(tb) / self.time_base)  # onto the promised time base
                out.time_base = self.time_base
            yield out


class PulldownRetimer:
    """Film frames of a soft-pulldown stream onto their own rate's even time grid.

    Decoded, soft 3:2 pulldown gives each film frame the time of its first field: 3 and 2
    field periods apart in turn, up to 1/5 of a film frame off the even 23.976 frames/s grid.
    Such a frame (one of the last three gaps is 3 fields: 3:2 and 3:2:2:3 cadences both have
    one) is moved to the nearest grid point, counted from the stream's start, in a time base
    fine enough for both (the input's / m, with the film frame a whole number of ticks).
    Frames 2 fields apart three times in a row are video-rate material inside the film
    (hybrid DVDs): they keep their own, even, times.
    Timestamps always increase.
    """

    def __init__(self, time_base: Fraction, rate: Fraction, start_ticks: int) -> None:
        step = 1 / (Fraction(rate) * Fraction(time_base))  # source ticks per film frame
        self.scale = step.denominator
        self.time_base = Fraction(time_base) / self.scale
        self.step = int(step * self.scale)
        self.field = Fraction(2 * self.step, 5)  # 3:2: 5 fields for 2 film frames
        self.anchor = int(start_ticks) * self.scale
        self.last: int | None = None  # last output timestamp
        self._source: int | None = None  # last input timestamp (new ticks)
        self._gaps: list[int] = []  # the last three input gaps, in whole fields

    def __call__(self, pts: int) -> int:
        x = int(pts) * self.scale
        if self._source is not None:
            self._gaps = (self._gaps + [round((x - self._source) / self.field)])[-3:]
        self._source = x
        k = round(Fraction(x - self.anchor, self.step))
        grid = self.anchor + k * self.step
        film = not self._gaps or 3 in self._gaps
        out = grid if film and 4 * abs(grid - x) <= self.step else x
        if self.last is not None and out <= self.last:
            out = max(x, self.last + 1)
        self.last = out
        return out


def decoder_time_base(info: VideoInfo, deinterlace: tuple[str, str] | None = None) -> Fraction:
    """The time base of the timestamps a :class:`Decoder` hands out for ``info`` and ``deinterlace``."""
    tb = Fraction(info.time_base)
    if info.pulldown and info.rate:
        tb = PulldownRetimer(tb, info.rate, 0).time_base
    return Deinterlacer(tb, *deinterlace, rate=info.rate).time_base if deinterlace else tb


class Decoder:
    """Iterates :class:`FrameBatch` es of a span of a video stream.

    ``start``/``duration`` select frames whose presentation time t (relative to the stream's
    start) satisfies start ≤ t < start + duration. A truncated or corrupt tail ends the stream
    with a warning once at least one frame decoded; a file that decodes nothing is an error.
    """

    def __init__(
        self,
        path: str,
        info: VideoInfo,
        start: Fraction | None = None,
        duration: Fraction | None = None,
        batch: int = 4,
        pin_memory: bool = False,
        buffers: int = 4,
        threads: int = 0,
        deinterlace: tuple[str, str] | None = None,
        crop: tuple[int, int, int, int] | None = None,
        frame_range: tuple[int, int] | None = None,
        keep_captions: bool = False,
    ) -> None:
        self.path = path
        self.info = info
        self.start = start or Fraction(0)
        self.end = None if duration is None else self.start + duration
        self.batch = max(1, int(batch))
        # crop (W, H, X, Y): only that rectangle is copied out of each frame (media/crop.py)
        self.crop = tuple(crop) if crop else None
        width, height = (self.crop[0], self.crop[1]) if self.crop else (info.width, info.height)
        self.layout = layout_for(info.pix_fmt, width, height, info.is_rgb)
        # (first, count): frames by index in presentation order after the time span (chunks)
        self.frame_range = frame_range
        self.pool = _BufferPool(self.layout, self.batch, buffers, pin_memory)
        self.threads = threads
        self.stats = DecodeStats()
        self.stop = False
        #: soft pulldown: film frames retimed onto their rate's even grid (before any deinterlacing)
        t0 = Fraction(info.start_time).limit_denominator(10**9)
        self.retimer = (PulldownRetimer(info.time_base, info.rate, round(t0 / Fraction(info.time_base)))
                        if info.pulldown and info.rate else None)
        source_tb = self.retimer.time_base if self.retimer else Fraction(info.time_base)
        #: ``(deint, parity)``: deinterlace with :class:`Deinterlacer` (a frame per field, or IVTC)
        self.deinterlacer = Deinterlacer(source_tb, *deinterlace, rate=info.rate) if deinterlace else None
        #: the time base of the timestamps handed out (the deinterlacer's when deinterlacing)
        self.time_base = self.deinterlacer.time_base if self.deinterlacer else source_tb
        #: A/53 closed captions (``cc_data``) of the frames handed out, by their timestamp, for the
        #: encoder to carry (it pops them). Inverse telecine drops and retimes frames: there the
        #: source frames' bytes are re-spread, in order, over the film frames (CaptionRetimer).
        self.keep_captions = keep_captions
        self.captions: dict[int, bytes] = {}
        self._field_captions: dict[int, bytes] = {}  # bwdif: by the first field's timestamp
        self._retimed_captions = (CaptionRetimer(self.deinterlacer.time_base)
                                  if self.deinterlacer and self.deinterlacer.source_pts_scale is None else None)

    # -- frames ---------------------------------------------------------------------------
    def _decoded(self, container: av.container.InputContainer, stream) -> Iterator[av.VideoFrame]:
        """Every frame the decoder gives, resynchronising after packets it rejects.

        A packet FFmpeg cannot decode (``AVERROR_INVALIDDATA`` and the like) is skipped, as
        ``ffmpeg`` does; the decoder picks up again at the next frame it can decode (the next
        keyframe at worst), and those frames keep their own timestamps. A demuxer error (a file
        cut short mid-packet) ends the stream. Frames without a timestamp get the previous
        one plus one frame duration.
        """
        st = self.stats
        tb = stream.time_base
        frame_dur = int(round(1 / (self.info.rate * tb))) if self.info.rate else 1
        last_pts = None
        packets = container.demux(stream)
        while not self.stop:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as err:
                if st.decoded == 0:
                    raise InputError(f"cannot read {self.path}: {err.strerror or err}") from err
                st.truncated = True
                log.debug("demuxing stopped: %s", err)
                break
            if packet.size:
                st.packets += 1
            try:
                frames = packet.decode()
            except av.error.FFmpegError as err:
                st.errors += 1
                log.debug("skipping an undecodable packet (pts %s): %s", packet.pts, err)
                frames = []
            for frame in frames:
                st.decoded += 1
                if frame.pts is None:
                    frame.pts = (last_pts + frame_dur) if last_pts is not None else 0
                last_pts = frame.pts
                yield frame

    def _frames(self) -> Iterator[av.VideoFrame]:
        container = open_input(self.path)
        try:
            stream = container.streams[self.info.index]
            stream.thread_type = "AUTO"
            if self.threads:
                stream.thread_count = self.threads
            tb = stream.time_base
            t0 = Fraction(self.info.start_time).limit_denominator(10**9)
            seeked = False
            if self.start > 0:
                target = int((t0 + self.start) / tb)
                try:
                    container.seek(target, stream=stream, backward=True, any_frame=False)
                    seeked = True
                except av.error.FFmpegError:
                    log.warning("seek failed; decoding from the beginning")
            out_tb = self.time_base
            source: Iterator[av.VideoFrame] = self._decoded(container, stream)
            if self.retimer is not None:
                source = self._retimed(source)
            if self.deinterlacer is not None:
                source = self._deinterlaced(source)
            last_end = None
            window_ended = False
            seen = 0
            for frame in source:
                t = frame.pts * out_tb - t0
                if t < self.start:
                    continue
                if self.end is not None and t >= self.end:
                    window_ended = True
                    break
                if self.frame_range is not None:  # frames by index in presentation order (chunks)
                    seen += 1
                    if seen <= self.frame_range[0]:
                        continue
                    if seen > self.frame_range[0] + self.frame_range[1]:
                        window_ended = True
                        break
                last_end = frame.pts * out_tb + (1 / self.info.rate if self.info.rate else 0)
                self._take_captions(frame)
                yield frame
            if self.stop:
                return
            if self.stats.decoded == 0:
                raise InputError(f"no decodable video frames in {self.path}")
            self._check_losses(seeked, None if window_ended else last_end, window_ended)
        finally:
            close_decoding(container, self.info.index)  # drained first: no frame thread left waiting

    def _take_captions(self, frame: av.VideoFrame) -> None:
        """Note the captions of a frame handed out. bwdif gives each field frame a copy of its
        source frame's side data; only the first field's frame keeps it (the caption data rate
        is the source's, and no caption byte is sent twice). fieldmatch builds frames from two
        source frames' fields; each keeps the captions of the source frame whose time it has."""
        sd = frame.side_data.get(A53_CAPTIONS)
        if self._retimed_captions is not None:
            cc = self._retimed_captions.take(frame.pts * self.time_base)
        elif self.deinterlacer is not None and self.deinterlacer.source_pts_scale is not None:
            cc = self._field_captions.pop(frame.pts, None)
            if len(self._field_captions) > 16:  # frames skipped before the window
                self._field_captions = {k: v for k, v in self._field_captions.items() if k > frame.pts}
        else:
            cc = bytes(sd) if sd is not None else None
        if (cc is not None or sd is not None) and not self.stats.captions:
            self._captions_found()
        if cc and self.keep_captions:
            self.captions[int(frame.pts)] = cc

    def _retimed(self, frames: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        assert self.retimer is not None
        for frame in frames:
            frame.pts = self.retimer(frame.pts)
            frame.time_base = self.retimer.time_base
            yield frame

    def _deinterlaced(self, frames: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        assert self.deinterlacer is not None
        for frame in frames:
            scale = self.deinterlacer.source_pts_scale
            sd = frame.side_data.get(A53_CAPTIONS) if self.keep_captions else None
            if sd is not None and self._retimed_captions is not None:
                self._retimed_captions.add(frame.pts * self.deinterlacer.in_time_base, bytes(sd))
            elif sd is not None and scale is not None:  # bwdif: the first field's frame is at twice the source timestamp
                self._field_captions[scale * int(frame.pts)] = bytes(sd)
            yield from self.deinterlacer(frame)
        if not self.stop:
            yield from self.deinterlacer(None)

    def _captions_found(self) -> None:
        """Closed captions ride in the source's picture bitstream (ATSC A/53 user data in SEI or
        MPEG-2 picture user data). Say once what happens to them."""
        self.stats.captions = True
        if self.keep_captions:
            log.info("input carries CEA-608/708 closed captions; they are carried into the HEVC output (A/53 SEI)")
            return
        log.info("input carries CEA-608/708 closed captions; left out, as asked")

    def _check_losses(self, seeked: bool, last_end: Fraction | None, window_ended: bool) -> None:
        """One warning for frames lost to damaged packets, or one for a stream cut short."""
        st, info = self.stats, self.info
        if st.errors:
            st.lost = max(st.errors, st.packets - st.decoded)
        t0 = Fraction(info.start_time).limit_denominator(10**9)
        declared = self._declared_end()
        frame_s = 1 / info.rate if info.rate else Fraction(0)
        short_by_count = not seeked and not window_ended and info.frames > 0 and st.packets < info.frames
        short_by_time = (declared is not None and last_end is not None
                         and declared - last_end > max(Fraction(1, 5), 2 * frame_s))
        if st.truncated or short_by_count or short_by_time:
            if short_by_count:
                what = f"{st.packets} of the {info.frames} frames its container lists"
            elif short_by_time:
                what = f"{float(last_end - t0):.3f} s of the {float(declared - t0):.3f} s its container declares"
            else:
                what = f"{st.packets} frames (a packet is cut short)"
            damaged = f"; {st.lost} damaged frame(s) skipped" if st.lost else ""
            self._warn(f"input is truncated: it ends after {what}; converted the {st.frames} frame(s) it has{damaged}")
        elif st.lost:
            self._warn(f"input is damaged: {st.lost} frame(s) could not be decoded and were skipped "
                       f"(decoding resumed at the next good frame, timestamps kept)")

    def _declared_end(self) -> Fraction | None:
        """End of the video stream on the source timeline, as its container declares it."""
        if self.info.duration is None or not self.info.duration_exact:
            return None
        return Fraction(self.info.start_time).limit_denominator(10**9) + \
            Fraction(self.info.duration).limit_denominator(10**9)

    def _warn(self, msg: str) -> None:
        log.warning("%s", msg)
        self.stats.warnings.append(msg)

    def _copy_planes(self, frame: av.VideoFrame, bufs: list[torch.Tensor], i: int) -> None:
        lay = self.layout
        if frame.format.name != lay.pix_fmt:
            frame = frame.reformat(format=lay.pix_fmt)
        if frame.width != self.info.width or frame.height != self.info.height:
            raise UnsupportedInputError(
                f"frame size changes mid-stream ({self.info.width}×{self.info.height} → {frame.width}×{frame.height}); "
                "not supported"
            )
        itemsize = lay.dtype.itemsize
        order = (2, 0, 1) if lay.kind == "rgb" else range(len(bufs))  # gbrp planes are G, B, R
        x0, y0 = (self.crop[2], self.crop[3]) if self.crop else (0, 0)
        for dst_index, src_index in enumerate(order):
            plane = frame.planes[src_index]
            h, w = bufs[dst_index].shape[1:]
            if dst_index == 0 or lay.kind != "yuv":
                ox, oy = x0, y0
            else:  # chroma: the offsets are whole chroma samples (checked by media/crop.py)
                ox, oy = x0 // lay.subsampling[0], y0 // lay.subsampling[1]
            arr = np.frombuffer(plane, dtype=lay.dtype).reshape(plane.height, plane.line_size // itemsize)
            bufs[dst_index][i].numpy().view(lay.dtype)[...] = arr[oy : oy + h, ox : ox + w]

    def __iter__(self) -> Iterator[FrameBatch]:
        bufs = None
        pts: list[int] = []
        first = 0
        for frame in self._frames():
            if self.stats.frames == 0:
                self.stats.rotation = int(getattr(frame, "rotation", 0) or 0)
            if bufs is None:
                bufs = self._take_buffers()
                if bufs is None:
                    return
                pts = []
                first = self.stats.frames
            self._copy_planes(frame, bufs, len(pts))
            pts.append(int(frame.pts))
            self.stats.frames += 1
            if len(pts) == self.batch:
                yield FrameBatch([b for b in bufs], pts, first, release=self._releaser(bufs))
                bufs = None
        if bufs is not None and pts:
            yield FrameBatch([b[: len(pts)] for b in bufs], pts, first, release=self._releaser(bufs))

    def _take_buffers(self) -> list[torch.Tensor] | None:
        """A free batch buffer, waiting while the consumer holds them all; None once stopped."""
        import queue

        while not self.stop:
            try:
                return self.pool.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def _releaser(self, bufs):
        return lambda: self.pool.put(bufs)
