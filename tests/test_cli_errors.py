"""User mistakes and bad values: one `error:` line on stderr, the documented exit code, before any
work, nothing left behind; no user text read as rich markup; each warning once; JSON progress is
JSON only. The CLI runs in-process (typer's CliRunner)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import stat
import tempfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import flat_planes, write_planes_clip
from hdrvideo.cli import _register_optional_commands, app
from hdrvideo.errors import UsageError, WeightsError

_register_optional_commands()
RUNNER = CliRunner()


def invoke(*args: str):
    return RUNNER.invoke(app, [str(a) for a in args])


def one_line(res, code: int, *needles: str) -> str:
    """The single stderr line of a failed command (exit ``code``), containing every needle."""
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr, res.exception)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert "Traceback" not in res.stderr + res.stdout
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Hidden work folders or temporary files left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("errors")
    return write_planes_clip(d / "in.mkv", [flat_planes(64, 36, (180, 128, 128))] * 3)


# --------------------------------------------------------------------------------------
# 7. user mistakes: exit 2, one line, before any work
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["--backend", "bogus"], "'--backend'"),
    (["--crf", "99"], "--crf"),
    (["--crf", "-5"], "--crf"),
    (["--crf", "nan"], "finite"),
    (["--x265-preset", "warp9"], "warp9"),
    (["--encoder", "h264"], "'--encoder'"),
    (["--start", "1e400"], "'--start'"),
    (["--duration", "inf"], "'--duration'"),
    (["--tile", "-1"], "'--tile'"),
    (["--batch", "0"], "'--batch'"),
    (["--light-level", "maybe"], "'--light-level'"),
    (["--chunks", "0"], "'--chunks'"),
    (["--progress", "loud"], "'--progress'"),
    (["--bogus"], "No such option: --bogus"),
])
def test_bad_options_are_refused_when_parsed(tmp_path, clip, args, needle):
    out = tmp_path / "out.mp4"
    one_line(invoke("convert", clip, "-o", out, *args), 2, needle)
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("args, needle", [
    (["bench", "--backend", "bogus"], "'--backend'"),
    (["bench", "--x265-preset", "warp9"], "'--x265-preset'"),
    (["bench", "--batch", "0"], "'--batch'"),
    (["batch", "--crf", "nan"], "'--crf'"),
    (["batch", "--encoder", "h264"], "'--encoder'"),
    (["batch", "--x265-preset", "warp9"], "'--x265-preset'"),
])
def test_other_commands_check_the_same_choices(args, needle):
    one_line(invoke(*args), 2, needle)


def test_help_and_no_arguments_are_not_errors():
    res = invoke("--help")
    assert res.exit_code == 0 and "convert" in res.stdout and res.stderr == ""
    res = invoke()
    assert res.exit_code == 2 and "convert" in res.stdout + res.stderr and "error:" not in res.stderr


def test_api_checks_options_by_the_same_rules(tmp_path, clip):
    import hdrvideo

    for bad in ({"crf": 99}, {"crf": float("nan")}, {"x265_preset": "warp9"}, {"backend": "bogus"},
                {"batch": 0}, {"tile": -4}, {"start": 1e400}, {"start": float("nan")}, {"encoder": "x"}):
        with pytest.raises(hdrvideo.HdrvideoError) as err:
            hdrvideo.convert(clip, tmp_path / "o.mp4", **bad)
        assert err.value.exit_code == 2 and "\n" not in str(err.value), bad
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.mp4").exists()


def test_tile_not_larger_than_the_overlap(tmp_path, clip):
    for tile in ("8", "16"):
        one_line(invoke("convert", clip, "-o", tmp_path / "o.mp4", "--preset", "itm", "--tile", tile), 2,
                 f"--tile must be 0 (whole frame) or larger than the tile overlap (16 pixels), not {tile}")


def test_output_folder_and_output_that_is_a_folder(tmp_path, clip):
    folder = tmp_path / "d.mp4"
    folder.mkdir()
    one_line(invoke("convert", clip, "-o", folder), 2, "output is a folder")
    one_line(invoke("convert", clip, "-o", folder, "--force"), 2, "output is a folder")
    one_line(invoke("convert", clip, "-o", tmp_path / "nowhere" / "o.mp4"), 2, "output folder does not exist")
    assert list(folder.iterdir()) == [] and leftovers(tmp_path) == []


@contextlib.contextmanager
def _unprivileged():
    """Run as nobody when root (root writes into read-only folders; the check must not be fooled)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_read_only_output_folder(clip):
    base = Path(tempfile.mkdtemp(prefix="hdrvideo-ro-"))  # traversable by nobody, unlike tmp_path
    try:
        base.chmod(0o755)
        src = base / "in.mkv"
        src.write_bytes(clip.read_bytes())
        src.chmod(0o644)
        ro = base / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        with _unprivileged():
            res = invoke("convert", src, "-o", ro / "o.mp4")
        one_line(res, 2, "output folder is not writable", str(ro))
        assert list(ro.iterdir()) == []
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def _irnet2_state() -> dict[str, torch.Tensor]:
    from hdrvideo.models import create

    return {k: v.clone() for k, v in create("irnet-2").state_dict().items()}


def _bad_weights(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Every kind of unusable weights file, with a fragment of the message it must give."""
    from safetensors.torch import save_file

    from hdrvideo.models import create

    files: dict[str, tuple[Path, str]] = {}
    p = tmp_path / "junk.safetensors"
    p.write_bytes(b"not a safetensors file")
    files["junk safetensors"] = (p, "cannot read")
    p = tmp_path / "junk.pth"
    p.write_bytes(b"\x80\x04not a pickle")
    files["junk pth"] = (p, "cannot read")
    sd = _irnet2_state()
    sd[next(iter(sd))][0] = float("nan")
    save_file(sd, str(tmp_path / "nan.safetensors"))
    files["NaN"] = (tmp_path / "nan.safetensors", "non-finite")
    sd = _irnet2_state()
    sd[next(iter(sd))] = sd[next(iter(sd))].to(torch.int32)
    save_file(sd, str(tmp_path / "int.safetensors"))
    files["integer tensor"] = (tmp_path / "int.safetensors", "not floating point")
    save_file({k: v.contiguous() for k, v in create("irnet-5-x2").state_dict().items()},
              str(tmp_path / "other.safetensors"))
    files["other architecture"] = (tmp_path / "other.safetensors", "does not fit")
    p = tmp_path / "weights.txt"
    p.write_text("x")
    files["unknown format"] = (p, "unsupported weights format")
    return files


def test_every_bad_weights_file_is_one_line_exit_2(tmp_path, clip):
    for what, (path, needle) in _bad_weights(tmp_path).items():
        out = tmp_path / "o.mp4"
        res = invoke("convert", clip, "-o", out, "--preset", "itm", "--weights", path, "--backend", "torch")
        one_line(res, 2, needle)
        assert not out.exists() and leftovers(tmp_path) == [], what
    one_line(invoke("convert", clip, "-o", tmp_path / "o.mp4", "--preset", "itm", "--weights", tmp_path / "nope.pth"),
             2, "'--weights'", "does not exist")
    one_line(invoke("convert", clip, "-o", tmp_path / "o.mp4", "--preset", "itm", "--weights", tmp_path), 2,
             "'--weights'")
    # the same through the API: WeightsError is a UsageError
    import hdrvideo

    with pytest.raises(WeightsError) as err:
        hdrvideo.convert(clip, tmp_path / "o.mp4", preset="itm", weights=str(tmp_path / "nope.pth"))
    assert isinstance(err.value, UsageError) and err.value.exit_code == 2
    assert leftovers(tmp_path) == []


def test_pickled_code_in_weights_is_never_run(tmp_path, clip):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": _Evil(str(marker))}, evil)
    res = invoke("convert", clip, "-o", tmp_path / "o.mp4", "--preset", "itm", "--weights", evil)
    line = one_line(res, 2, "refusing", "pickled objects other than tensors")
    assert "weights_only=False" not in line and "weights_only" not in line
    assert not marker.exists() and not (tmp_path / "o.mp4").exists()


class _Evil:
    """Unpickling this would create ``path`` (runs code)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('pwned')",))


PRESET_CASES = [
    (b"sdr_white = 0\n", "sdr_white must be > 0"),
    (b"sdr_white = -100.0\n", "sdr_white must be > 0"),
    (b"sdr_white = nan\n", "sdr_white must be a finite number"),
    (b"sdr_white = 1e9\n", "sdr_white must be > 0 and ≤ 10000, not 1e+09"),
    (b"[encode]\ncrf = \"18\"\n", "[encode]: crf must be a number"),
    (b"[encode]\ncrf = 60\n", "[encode]: crf must be between 0 and 51"),
    (b"[encode]\nx265_preset = \"warp9\"\n", "x265_preset must be one of"),
    (b"[encode]\nencoder = \"h264\"\n", "encoder must be one of"),
    (b"processor = \"auto\"\n[[auto]]\npreset = \"itm\"\n", "[[auto]] rule 1: missing key(s) max_height"),
    (b"processor = \"auto\"\n[[auto]]\nmax_height = \"x\"\npreset = \"itm\"\n", "max_height must be an integer"),
    (b"target = [3840, 2160, 1]\n", "target must be a list of 2 values"),
    (b"target = [100, 3]\n", "target[1] must be between 16 and 16384"),
    (b"batch = 2.5\n", "batch must be an integer"),
    (b"batch = true\n", "batch must be an integer"),
    (b"scale = 3\n", "scale must be one of 1, 2, 4"),
    (b"tile = 10\n", "tile must be 0 (whole frame) or larger than the tile overlap (16 pixels)"),
    (b"encode = 3\n", "[encode] must be a table"),
    (b"[mastering]\nmax_luminance = 0\n", "max_luminance must be > 0"),
    (b"[mastering]\nprimaries = \"xyz\"\n", "primaries must be one of"),
    (b"processor = \"neural\"\n[model]\narch = \"irnet-2\"\ncolour_domain = \"xyz\"\n", "colour_domain must be one of"),
    (b"processor = \"neural\"\n[model]\nweights = \"a.safetensors\"\n", "[model]: missing key(s) arch"),
    (b"name = 5\n", "name must be a string"),
    (b"description = \"caf\xe9\"\n", "is not UTF-8 text"),
]


@pytest.mark.parametrize("text, needle", PRESET_CASES)
def test_bad_preset_values_exit_2(tmp_path, clip, text, needle):
    preset = tmp_path / "p.toml"
    preset.write_bytes(text)
    line = one_line(invoke("convert", clip, "-o", tmp_path / "o.mp4", "--preset", preset), 2, needle)
    assert "[" not in needle or needle.split("]")[0] + "]" in line  # brackets survive (no markup)
    assert not (tmp_path / "o.mp4").exists() and leftovers(tmp_path) == []


def test_every_preset_field_is_type_checked():
    """A value of no acceptable type is refused for every field of every preset table — also for
    fields added later (the check comes from the annotation)."""
    from hdrvideo.presets import EncodeSettings, MasteringDisplay, ModelSpec, Preset, check_value

    for cls in (Preset, EncodeSettings, MasteringDisplay, ModelSpec):
        for f in dataclasses.fields(cls):
            with pytest.raises(UsageError):
                check_value(cls, f.name, object(), f"{cls.__name__}.{f.name}")


# --------------------------------------------------------------------------------------
# 8. no user text is read as rich markup
# --------------------------------------------------------------------------------------

def test_paths_with_brackets_print_as_given(tmp_path, clip):
    out = tmp_path / "out [final].mp4"
    res = invoke("convert", clip, "-o", out, "--x265-preset", "ultrafast")
    assert res.exit_code == 0, res.stderr
    assert f"✓ {out}" in res.stdout and out.exists()
    (tmp_path / "a [").mkdir()
    out2 = tmp_path / "a [/] b.mp4"  # a folder "a [" and a file "] b.mp4": the path contains "[/]"
    res = invoke("convert", clip, "-o", out2, "--x265-preset", "ultrafast")
    assert res.exit_code == 0, res.stderr
    assert f"✓ {out2}" in res.stdout and out2.exists()
    one_line(invoke("convert", clip, "-o", tmp_path / "b [/]x.mp4"), 2, f"output folder does not exist: {tmp_path / 'b ['}")
    one_line(invoke("convert", clip, "-o", tmp_path / "[bold]x[/bold] :smile:.avi"), 2, "'.avi'")
    res = invoke("probe", out)
    assert res.exit_code == 0 and f": {out}" in res.stdout


# --------------------------------------------------------------------------------------
# 9. each warning once; JSON progress is JSON only, no repeated lines, named stages
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def untagged(tmp_path_factory) -> Path:
    """An untagged clip: converting it warns about the assumed matrix, primaries and range."""
    d = tmp_path_factory.mktemp("untagged")
    return write_planes_clip(d / "untagged.mkv", [flat_planes(64, 36, (120, 128, 128))] * 8, tags=None,
                             codec="libx264", options={"g": "4"})


ASSUMED = ["assumed matrix", "assumed primaries", "assumed limited range"]


def test_each_warning_once(tmp_path, untagged):
    res = invoke("convert", untagged, "-o", tmp_path / "o.mp4", "--x265-preset", "ultrafast")
    assert res.exit_code == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    for w in ASSUMED:
        assert sum(w in ln for ln in lines) == 1, res.stderr
    assert all(ln.startswith("warning: ") for ln in lines), res.stderr
    # chunked: the same warnings from every chunk are shown once
    res = invoke("convert", untagged, "-o", tmp_path / "c.mp4", "--x265-preset", "ultrafast", "--chunks", "2",
                 "--workers", "1")
    assert res.exit_code == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    for w in ASSUMED:
        assert sum(w in ln for ln in lines) == 1, res.stderr


def test_json_progress_is_json_only(tmp_path, untagged):
    from hdrvideo.pipeline import PROGRESS_STAGES

    res = invoke("convert", untagged, "-o", tmp_path / "o.mp4", "--x265-preset", "ultrafast", "--progress", "json")
    assert res.exit_code == 0, res.stderr
    events = [json.loads(ln) for ln in res.stderr.splitlines() if ln.strip()]  # every line is JSON
    warnings = [e["message"] for e in events if e["stage"] == "warning"]
    assert sorted(w.split(" (")[0].rsplit(" ", 1)[0] for w in warnings) == sorted(
        ["assumed matrix", "assumed primaries", "assumed limited"])
    progress = [e for e in events if e["stage"] in PROGRESS_STAGES]
    keys = [(e["frame"], e["total"], e["stage"]) for e in progress]
    assert all(a != b for a, b in zip(keys, keys[1:])), keys  # no repeated line
    stages = [e["stage"] for e in progress]
    order = [s for s in PROGRESS_STAGES if s in stages]
    assert order == ["convert", "flush", "meter", "mux", "done"], stages  # finishing stages are named
    assert [PROGRESS_STAGES.index(s) for s in stages] == sorted(PROGRESS_STAGES.index(s) for s in stages)
    assert stages[-1] == "done" and events[-1]["report"]["frames"] == 8
    # a failure is a JSON line too
    res = invoke("convert", untagged, "-o", tmp_path / "o.mp4", "--progress", "json")
    events = [json.loads(ln) for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2 and events == [{"stage": "failed", "exit_code": 2, "error": events[0]["error"]}]
    assert "--force" in events[0]["error"]


def test_slow_rates_in_seconds_per_frame():
    from hdrvideo.cli import rate_text

    assert rate_text(24.0) == "24.0 fps"
    assert rate_text(1.0) == "1.0 fps"
    assert rate_text(0.1) == "10.0 s/frame"
    assert rate_text(0.4) == "2.5 s/frame"
    assert rate_text(0.0) == "0.0 fps"


# --------------------------------------------------------------------------------------
# 10. bad values give a clear error, not bad video
# --------------------------------------------------------------------------------------

def test_weights_with_bad_values_are_refused_by_the_api(tmp_path):
    from safetensors.torch import save_file

    from hdrvideo.models import create, load_weights

    for value, needle in ((float("nan"), "non-finite"), (float("inf"), "non-finite")):
        sd = _irnet2_state()
        sd["fea_conv.weight"][0, 0, 0, 0] = value
        save_file(sd, str(tmp_path / "w.safetensors"))
        with pytest.raises(WeightsError, match=needle):
            load_weights(create("irnet-2"), tmp_path / "w.safetensors")
    sd = _irnet2_state()
    torch.save({k: (v * 1000).to(torch.int64) for k, v in sd.items()}, tmp_path / "w.pth")
    with pytest.raises(WeightsError, match="not floating point"):
        load_weights(create("irnet-2"), tmp_path / "w.pth")


def test_non_finite_network_output_stops_the_conversion(tmp_path, clip):
    from hdrvideo.models import create, save_weights

    model = create("irnet-2")
    with torch.no_grad():  # finite weights whose products overflow: the output is NaN
        model.fea_conv.weight.fill_(3e38)
    save_weights(model.eval(), tmp_path / "overflow.safetensors")
    out = tmp_path / "o.mp4"
    res = invoke("convert", clip, "-o", out, "--preset", "itm", "--weights", tmp_path / "overflow.safetensors",
                 "--backend", "torch")
    one_line(res, 1, "produced non-finite values (NaN or infinity)")
    assert not out.exists() and leftovers(tmp_path) == []


def test_batch_is_capped_by_a_memory_estimate(tmp_path, clip, monkeypatch):
    import hdrvideo.pipeline as pl

    src = write_planes_clip(tmp_path / "big.mkv", [flat_planes(640, 360, (180, 128, 128))] * 6)
    plan = pl.Pipeline(src, tmp_path / "o.mp4", batch=100000).plan()
    host, dev = pl.frame_memory(plan.video, plan.out_size, plan.preset)
    cap = min(pl.available_ram() // 4, pl.RAM_BUDGET_CAP) // (host + dev)
    assert host + dev >= 640 * 360 * pl.COLOUR_BYTES_PER_OUTPUT_PIXEL
    assert plan.preset.batch == min(cap, 6)  # the memory cap, then the clip's frame count
    assert any(w.startswith(f"--batch 100000 capped to {cap}") for w in plan.notes)
    # with a small budget the cap binds below the frame count, with one warning line
    monkeypatch.setattr(pl, "RAM_BUDGET_CAP", 3 * (host + dev))
    plan = pl.Pipeline(src, tmp_path / "o.mp4", batch=100000).plan()
    assert plan.preset.batch == 3
    res = invoke("convert", src, "-o", tmp_path / "o.mp4", "--batch", "100000", "--x265-preset", "ultrafast")
    assert res.exit_code == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == [lines[0]] and lines[0].startswith("warning: --batch 100000 capped to 3 to bound memory")
    # a preset's own batch is capped quietly
    monkeypatch.setattr(pl, "RAM_BUDGET_CAP", 1)
    assert pl.Pipeline(src, tmp_path / "o2.mp4").plan().preset.batch == 1
    assert pl.Pipeline(src, tmp_path / "o2.mp4").plan().notes == ()


# --------------------------------------------------------------------------------------
# 12. training checkpoints load without unpickling code
# --------------------------------------------------------------------------------------

def test_training_checkpoints_never_unpickle_code(tmp_path):
    data = tmp_path / "data"
    (data / "train_sdr").mkdir(parents=True)
    (data / "train_hdr").mkdir(parents=True)
    marker = tmp_path / "pwned"
    for run, name in (("resume", "checkpoint.pt"), ("init", "checkpoint_evil.pt")):
        (tmp_path / run).mkdir()
        torch.save({"model": {}, "config": {"arch": "irnet-2"}, "x": _Evil(str(marker))}, tmp_path / run / name)
    res = invoke("train", "--arch", "irnet-2", "--data", data, "--out", tmp_path / "resume", "--resume", "--quiet")
    line = one_line(res, 2, "refusing", "pickled objects other than tensors")
    assert "weights_only" not in line
    res = invoke("train", "--arch", "irnet-2", "--data", data, "--out", tmp_path / "run",
                 "--init", tmp_path / "init" / "checkpoint_evil.pt", "--quiet")
    line = one_line(res, 2, "refusing")
    assert "weights_only" not in line
    assert not marker.exists()


def test_training_checkpoint_is_safetensors_plus_json(tmp_path):
    from safetensors import safe_open

    from hdrvideo.models import create
    from hdrvideo.training.train import load_checkpoint, save_checkpoint

    model = create("irnet-2")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(1, 3, 8, 8)).mean().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 1, "history": [{"loss": 0.5}]}
    save_checkpoint(state, tmp_path / "checkpoint.safetensors")
    with safe_open(str(tmp_path / "checkpoint.safetensors"), framework="pt") as f:
        assert "model/fea_conv.weight" in f.keys() and json.loads(f.metadata()["state"])["step"] == 1
    back = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert back["step"] == 1 and back["history"] == [{"loss": 0.5}]
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert set(back["optimizer"]["state"]) == set(opt.state_dict()["state"])  # integer keys kept
    for k, v in model.state_dict().items():
        assert torch.equal(back["model"][k], v)
    opt2 = torch.optim.Adam(create("irnet-2").parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    # the model tensors of a checkpoint also load as weights (eval --weights checkpoint.safetensors)
    from hdrvideo.models import load_weights

    load_weights(create("irnet-2"), tmp_path / "checkpoint.safetensors")
