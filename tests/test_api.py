"""The Python API: convert() → Report, progress callbacks, stable exception types, embedding."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

import hdrvideo
from hdrvideo import errors

from conftest import decode_planes, flat_planes, write_planes_clip

FAST = {"x265_preset": "ultrafast"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("api")
    a = write_planes_clip(d / "a.mkv", [flat_planes(64, 36, (200 - 4 * i, 128, 120)) for i in range(12)],
                          audio_seconds=0.5)
    b = write_planes_clip(d / "b.mkv", [flat_planes(96, 54, (60 + 8 * i, 110, 140)) for i in range(20)])
    return a, b


def test_public_names():
    for name in hdrvideo.__all__:
        assert hasattr(hdrvideo, name), name
    from hdrvideo import farm

    for name in farm.__all__:
        assert getattr(farm, name) is not None, name


def test_convert_returns_a_report_and_reports_progress(clips, tmp_path):
    events: list[hdrvideo.ProgressEvent] = []
    report = hdrvideo.convert(clips[0], tmp_path / "a.mp4", preset="bt2408", progress=events.append, **FAST)
    assert isinstance(report, hdrvideo.Report)
    assert report.frames == 12 and report.output == str(tmp_path / "a.mp4")
    assert report.input_size == report.output_size == (64, 36)
    assert report.max_cll >= report.max_fall > 0 and report.streams_copied == ["audio #1 aac"]
    json.dumps(report.to_dict())  # JSON-ready
    assert events[-1].stage == "done" and events[-1].frame == events[-1].total == 12
    stages = [e.stage for e in events]
    assert "mux" in stages and stages.index("mux") < len(stages) - 1
    frames = [e.frame for e in events]
    assert frames == sorted(frames)

    # the lower level: Pipeline + ConvertOptions, same result
    opts = hdrvideo.ConvertOptions(preset="bt2408", x265_preset="ultrafast")
    again = hdrvideo.Pipeline(clips[0], tmp_path / "a2.mp4", opts).run()
    assert (again.frames, again.max_cll, again.max_fall) == (report.frames, report.max_cll, report.max_fall)


def test_stable_exception_types(clips, tmp_path):
    assert issubclass(errors.UnsupportedInputError, errors.InputError)
    assert issubclass(errors.OutputExistsError, errors.UsageError)
    for exc, code in ((errors.HdrvideoError, 1), (errors.EncoderError, 1), (errors.BackendError, 1),
                      (errors.InputError, 2), (errors.UnsupportedInputError, 2), (errors.UsageError, 2),
                      (errors.OutputExistsError, 2), (errors.WeightsMissingError, 2)):
        assert issubclass(exc, errors.HdrvideoError) and exc.exit_code == code, exc
    from hdrvideo.farm.batch import PARTIAL_EXIT_CODE

    assert PARTIAL_EXIT_CODE == 3

    with pytest.raises(errors.InputError, match="input not found"):
        hdrvideo.convert(tmp_path / "missing.mp4", tmp_path / "x.mp4")
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(b"\x1a\x45\xdf\xa3 definitely not matroska")
    with pytest.raises(errors.InputError):
        hdrvideo.convert(junk, tmp_path / "x.mp4")
    hdr = write_planes_clip(tmp_path / "pq.mkv", [flat_planes(64, 36, (500, 512, 512), bits=10)],
                            pix_fmt="yuv420p10le", tags=(9, 16, 9, 1))
    with pytest.raises(errors.UnsupportedInputError, match="already HDR"):
        hdrvideo.convert(hdr, tmp_path / "x.mp4")
    with pytest.raises(errors.UsageError, match="unknown option"):
        hdrvideo.convert(clips[0], tmp_path / "x.mp4", crff=3)
    with pytest.raises(errors.UsageError, match="unknown preset"):
        hdrvideo.convert(clips[0], tmp_path / "x.mp4", preset="no-such-preset")
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"keep me")
    with pytest.raises(errors.OutputExistsError):
        hdrvideo.convert(clips[0], existing)
    assert existing.read_bytes() == b"keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_two_conversions_in_one_process_do_not_interfere(clips, tmp_path):
    """Two threads convert different clips at once: same results as one after the other."""
    seq = [hdrvideo.convert(c, tmp_path / f"seq{i}.mp4", **FAST) for i, c in enumerate(clips)]
    reports: dict[int, hdrvideo.Report] = {}
    events: dict[int, list] = {0: [], 1: []}
    failures: list[BaseException] = []
    barrier = threading.Barrier(2)

    def work(i: int) -> None:
        try:
            barrier.wait()
            reports[i] = hdrvideo.convert(clips[i], tmp_path / f"par{i}.mp4", progress=events[i].append, **FAST)
        except BaseException as err:  # noqa: BLE001
            failures.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    for i in (0, 1):
        r, s = reports[i], seq[i]
        assert (r.frames, r.output_size, r.max_cll, r.max_fall) == (s.frames, s.output_size, s.max_cll, s.max_fall)
        assert {e.total for e in events[i] if e.total} == {s.frames}  # each callback saw its own job only
        for fa, fb in zip(decode_planes(r.output), decode_planes(s.output), strict=True):
            for pa, pb in zip(fa, fb):
                assert int(np.abs(pa.astype(int) - pb.astype(int)).max()) <= 1


def test_job_object(clips, tmp_path):
    from hdrvideo.farm import Job

    src = tmp_path / "clip.mkv"
    src.write_bytes(clips[1].read_bytes())
    job = Job(str(src), options=FAST)
    assert job.output == str(tmp_path / "clip.hdr10.mkv")
    report = job.run()
    assert report.frames == 20 and Path(report.output).is_file()
    with pytest.raises(errors.OutputExistsError):
        job.run()
    assert job.run(force=True).frames == 20
