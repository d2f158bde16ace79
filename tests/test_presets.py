"""Presets are data: loading, validation, output sizing, auto selection, packaging."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from hdrvideo.errors import UsageError
from hdrvideo.presets import list_presets, load_preset, output_size

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "size,scale,expected",
    [
        ((1280, 720), 4, (3840, 2160)),  # the examples
        ((640, 272), 4, (2560, 1088)),
        ((960, 540), 4, (3840, 2160)),
        ((1920, 1080), 2, (3840, 2160)),
        ((1920, 800), 2, (3840, 1600)),
        ((1440, 1080), 2, (2880, 2160)),  # 4:3 pillar: height-limited, never stretched
        ((720, 576), 1, (720, 576)),  # bt2408 keeps the input size
        ((4096, 2160), 1, (3840, 2024)),  # larger than the box: fitted down, even
    ],
)
def test_output_size(size, scale, expected):
    w, h = output_size(*size, scale, (3840, 2160))
    assert (w, h) == expected
    assert w % 2 == 0 and h % 2 == 0
    assert abs(w / h - size[0] / size[1]) < 0.01


def test_builtin_presets_load_and_describe_themselves():
    names = {p.name: p for p in list_presets()}
    assert names["bt2408"].processor == "bt2408" and names["bt2408"].scale == 1
    assert names["sr4-itm"].model.arch == "irnet-5-x4" and names["sr4-itm"].scale == 4
    assert names["sr2-itm"].model.arch == "irnet-5-x2" and names["sr2-itm"].scale == 2
    assert names["itm"].model.arch == "irnet-2"
    assert names["sr4-itm-gpgm"].model.arch == "gpgmnet-x4"
    assert names["itm-agcm"].model.arch == "agcm" and names["itm-agcm"].model.weights is None
    for p in names.values():
        assert p.description and p.mastering.max_luminance == 1000 and p.mastering.primaries == "p3-d65"


@pytest.mark.parametrize("height,expected", [(360, "sr4-itm"), (540, "sr4-itm"), (720, "sr4-itm"),
                                             (1080, "sr2-itm"), (1600, "sr2-itm"), (2160, "itm")])
def test_auto_reaches_2160_lines(height, expected):
    p = load_preset("auto").resolve(height)
    assert p.name == expected
    w, h = output_size(height * 16 // 9 // 2 * 2, height, p.scale, p.target)
    assert h == min(2160, 4 * height)  # below 540 lines even ×4 cannot reach 2160


def test_user_preset_file_and_validation(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('description = "brighter"\nprocessor = "bt2408"\nsdr_white = 250\n[mastering]\nmax_luminance = 4000\n')
    p = load_preset(f)
    assert p.name == "mine" and p.sdr_white == 250 and p.mastering.max_luminance == 4000
    for bad, msg in [
        ('processor = "magic"', "processor must be"),
        ("scale = 3", "scale must be"),
        ('processor = "neural"', "needs a \\[model\\]"),
        ("[mastering]\nprimaries = \"srgb\"", "primaries must be one of"),
        ("[encode]\nbitrat = 5", "unknown key\\(s\\) bitrat"),
        ("[encode]\nbitrate = 5", "invalid bitrate 5"),
        ('[encode]\nx265_params = "colorprim=bt709"', "HDR10 signalling"),
        ('[encode]\nlevel = "7.7"', "unknown HEVC level"),
        ("target = [3841, 2160]", "target\\[0\\] must be even"),
        ("this is not toml", "invalid TOML"),
    ]:
        f.write_text(bad)
        with pytest.raises(UsageError, match=msg):
            load_preset(f)
    with pytest.raises(UsageError, match="unknown preset"):
        load_preset("does-not-exist")


def test_pyproject_lists_every_subpackage():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(data["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "hdrvideo").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject packages: {sorted(found - listed)}"
    assert {"hdrvideo.preset_files", "hdrvideo.engines"} <= listed


@pytest.mark.slow
def test_presets_work_after_plain_pip_install(tmp_path):
    """A non-editable ``pip install`` (into a target dir, dependencies from this env) finds its presets."""
    import os

    site = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(REPO)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    assert (site / "hdrvideo" / "preset_files" / "sr4-itm.toml").is_file()
    code = ("import hdrvideo, hdrvideo.presets as p, pathlib;"
            "print(pathlib.Path(hdrvideo.__file__).parent);"
            "print(sorted(x.name for x in p.list_presets()));"
            "print(p.load_preset('sr4-itm').model.arch)")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    pkg_dir, names, arch = out.stdout.splitlines()
    assert pkg_dir.startswith(str(site))  # really the installed copy, not the source tree
    assert re.search(r"'bt2408'.*'sr4-itm'", names) and arch == "irnet-5-x4"


def test_presets_found_from_a_source_checkout(monkeypatch):
    """Running from the repository (``python -m pytest`` imports ./hdrvideo) finds presets/ too."""
    import hdrvideo.presets as presets_mod

    def no_data_package(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(presets_mod.resources, "files", no_data_package)
    assert "sr4-itm" in {p.name for p in presets_mod.list_presets()}
    assert (REPO / "engines") in presets_mod.engines_dirs()
