"""Architectures, registry, detection, weights I/O and the model I/O contract."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from hdrvideo import models
from hdrvideo.models import ITMModel, WeightsError
from hdrvideo.models.agcm import AGCM, matlab_bicubic_taps
from hdrvideo.models.base import mean_std
from hdrvideo.models.gpgmnet import DropBlock2d, GPGMNet, box_filter, guided_filter

SHARED = Path(__file__).resolve().parents[2] / "shared"
IRNET_KEYS = SHARED / "reference" / "irnet" / "state_dict_keys.txt"
AGCM_PTH = SHARED / "reference" / "agcm" / "AGCM.pth"
AGCM_SHA256 = "cd60200bbced1856c17f8a96b13ce56cb578dfe08a682ab2676a09be98066c82"

ALL = ["irnet-2", "irnet-1-48", "irnet-5-x2", "irnet-5-x4", "gpgmnet-x2", "gpgmnet-x4", "agcm"]


def _seeded(name: str, seed: int = 0, **options) -> ITMModel:
    torch.manual_seed(seed)
    return models.create(name, **options)


# --------------------------------------------------------------------------------------
# registry and parameter counts
# --------------------------------------------------------------------------------------


def test_registry_names_and_specs():
    assert models.architecture_names() == ALL
    specs = models.list_architectures()
    json.dumps(specs)  # plain, serialisable dicts for `hdrvideo models --json`
    by_name = {s["name"]: s for s in specs}
    assert set(by_name) == set(ALL)
    for s in specs:
        assert set(s) >= {"name", "scale", "params", "description"}
        assert isinstance(s["params"], int) and s["params"] > 0
        assert s["description"] and "\n" not in s["description"]
        assert models.get_spec(s["name"]).citation
    assert {n: by_name[n]["scale"] for n in ALL} == {
        "irnet-2": 1, "irnet-1-48": 1, "irnet-5-x2": 2, "irnet-5-x4": 4,
        "gpgmnet-x2": 2, "gpgmnet-x4": 4, "agcm": 1,
    }


@pytest.mark.parametrize(
    "name, count",
    [("irnet-2", 134_731), ("irnet-1-48", 49_302), ("irnet-5-x4", 468_192), ("irnet-5-x2", 320_480), ("agcm", 35_251)],
)
def test_exact_parameter_counts(name, count):
    model = models.create(name)
    assert sum(p.numel() for p in model.parameters()) == count
    assert models.get_spec(name).params == count
    assert model.arch == name


@pytest.mark.parametrize("name, paper", [("gpgmnet-x2", 770_000), ("gpgmnet-x4", 920_000)])
def test_gpgmnet_parameter_count_within_10_percent_of_paper(name, paper):
    n = models.create(name).num_parameters()
    assert abs(n - paper) / paper < 0.10, n
    assert models.get_spec(name).params == n


def test_gpgmnet_x4_minus_x2_is_one_upsampling_stage():
    diff = models.get_spec("gpgmnet-x4").params - models.get_spec("gpgmnet-x2").params
    assert diff == 64 * 256 * 9 + 256  # conv3×3 64→256 (+PixelShuffle): the paper's 0.15 M gap


def test_create_unknown_name_lists_available():
    with pytest.raises(models.UnknownArchitectureError) as ei:
        models.create("irnet-7")
    msg = str(ei.value)
    assert "irnet-7" in msg and "irnet-2" in msg and "gpgmnet-x4" in msg


def test_create_rejects_bad_options():
    with pytest.raises(ValueError, match="colour_domain"):
        models.create("irnet-2", colour_domain="xyz")
    with pytest.raises(ValueError, match="condition_resize"):
        models.create("agcm", condition_resize="lanczos")


# --------------------------------------------------------------------------------------
# IRNet layout
# --------------------------------------------------------------------------------------


def _reference_sections() -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    sections: dict[str, list] = {}
    current = None
    for line in IRNET_KEYS.read_text().splitlines():
        m = re.match(r"##\s+(\S+)\s+\(.*\):\s*([\d,]+) parameters", line)
        if m:
            current = m.group(1)
            sections[current] = []
            continue
        m = re.match(r"(\S+)\s+\(([\d, ]*)\)\s*$", line)
        if m and current:
            shape = tuple(int(v) for v in m.group(2).replace(" ", "").split(",") if v)
            sections[current].append((m.group(1), shape))
    return sections


@pytest.mark.skipif(not IRNET_KEYS.is_file(), reason="shared/reference/irnet not available")
@pytest.mark.parametrize("name", ["irnet-2", "irnet-1-48", "irnet-5-x4"])
def test_irnet_state_dict_equals_official_layout(name):
    ref = _reference_sections()[name]
    ours = [(k, tuple(v.shape)) for k, v in models.create(name).state_dict().items()]
    assert ours == ref  # same names, same shapes, same order
    # and an official-layout state_dict loads with strict=True into the object users get
    sd = {k: torch.randn(s) for k, s in ref}
    models.create(name).load_state_dict(sd, strict=True)


def test_irnet_official_key_spot_checks():
    sd = models.create("irnet-5-x4").state_dict()
    assert tuple(sd["IRB5.esa.conv_du.2.weight"].shape) == (64, 4, 1, 1)
    assert tuple(sd["IRB1.distill_2.weight"].shape) == (32, 64, 1, 1)
    assert tuple(sd["c.0.weight"].shape) == (64, 320, 1, 1)
    assert tuple(sd["upsampler1.0.weight"].shape) == (256, 64, 3, 3)
    assert tuple(sd["upsampler2.0.weight"].shape) == (12, 64, 3, 3)
    x2 = models.create("irnet-5-x2").state_dict()
    assert tuple(x2["conv3_layer.weight"].shape) == (64, 64, 3, 3)
    assert tuple(x2["upsampler.0.weight"].shape) == (12, 64, 3, 3)
    assert not any(k.startswith("upsampler1") for k in x2)
    assert tuple(models.create("irnet-2").state_dict()["upsampler.weight"].shape) == (3, 64, 3, 3)
    # no buffers leak into the state_dict (colour matrices are non-persistent)
    assert all(not k.startswith("_") for k in sd)


def test_contrast_is_population_std_plus_mean():
    x = torch.randn(2, 5, 7, 9)
    m, s = mean_std(x)
    torch.testing.assert_close(m, x.mean(dim=(2, 3), keepdim=True))
    torch.testing.assert_close(s, x.std(dim=(2, 3), unbiased=False, keepdim=True))
    # finite gradient on a perfectly flat channel
    flat = torch.ones(1, 2, 4, 4, requires_grad=True)
    sum(mean_std(flat)).sum().backward()
    assert torch.isfinite(flat.grad).all()


def test_irnet_block_equations():
    """IRB output = x + CCA(conv1×1([F1, F2])) with F2 = 1×1(x + mid_1(F1)) (official layout)."""
    torch.manual_seed(0)
    net = models.create("irnet-1-48")
    blk = net.IRB1
    x = torch.randn(1, 48, 9, 11)
    f1 = torch.nn.functional.leaky_relu(blk.distill_1.conv3_1(x), 0.05)
    f2 = blk.distill_2(x + blk.mid_1(f1))
    u = blk.conv(torch.cat([f1, f2], 1))
    y = u.mean((2, 3), keepdim=True) + ((u - u.mean((2, 3), keepdim=True)) ** 2).mean((2, 3), keepdim=True).sqrt()
    att = torch.sigmoid(blk.esa.conv_du[2](torch.relu(blk.esa.conv_du[0](y))))
    out, _ = blk(x)
    torch.testing.assert_close(out, x + u * att, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------
# model I/O contract
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_output_shapes_at_odd_sizes(name):
    model = _seeded(name).eval()
    s = model.scale
    h, w = (23, 37) if s == 1 else (24, 40)
    with torch.no_grad():
        y = model(torch.rand(2, 3, h, w))
    assert y.shape == (2, 3, h * s, w * s)
    assert y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0  # eval clamp
    if s > 1:  # ×2/×4 networks also work at odd sizes
        with torch.no_grad():
            assert model(torch.rand(1, 3, 23, 37)).shape == (1, 3, 23 * s, 37 * s)


@pytest.mark.parametrize("name", ["irnet-2", "gpgmnet-x2", "agcm"])
def test_clamp_only_in_eval_mode(name):
    model = _seeded(name)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.bias.fill_(5.0)  # push the output far above 1
    x = torch.rand(2, 3, 24, 40)
    model.train()
    y_train = model(x).detach()
    assert float(y_train.max()) > 1.0
    model.eval()
    with torch.no_grad():
        assert float(model(x).max()) <= 1.0
    model.clamp_output = False
    with torch.no_grad():
        assert float(model(x).max()) > 1.0


class _IdentityNet(ITMModel):
    def forward_net(self, x, context=None):
        return x


def test_ycrcb_domain_round_trip_is_identity():
    x = torch.rand(2, 3, 8, 9)
    net = _IdentityNet(1, colour_domain="ycrcb601").eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), x, atol=1e-5, rtol=0)


def test_ycrcb_domain_is_opencv_ycrcb():
    """The network sees OpenCV's float YCrCb: Y, Cr+0.5, Cb+0.5 with BT.601 coefficients."""
    from hdrvideo.colour import rgb_to_ycbcr

    x = torch.rand(1, 3, 5, 6)
    net = _IdentityNet(1, colour_domain="ycrcb601")
    enc = net.encode_input(x)
    r, g, b = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    opencv = torch.stack([y, (r - y) * 0.713 + 0.5, (b - y) * 0.564 + 0.5], 1)
    torch.testing.assert_close(enc, opencv, atol=1e-3, rtol=0)
    ycbcr = rgb_to_ycbcr(x, "bt601")
    torch.testing.assert_close(enc, ycbcr[:, [0, 2, 1]] + torch.tensor([0, 0.5, 0.5]).view(1, 3, 1, 1), atol=1e-6, rtol=0)
    # rgb domain is a no-op
    assert torch.equal(_IdentityNet(1).encode_input(x), x)


def test_colour_domain_feeds_the_network():
    seen = {}

    class Spy(ITMModel):
        def forward_net(self, x, context=None):
            seen["x"] = x
            return x

    grey = torch.full((1, 3, 4, 4), 0.25)
    Spy(1, colour_domain="ycrcb601")(grey)
    torch.testing.assert_close(seen["x"][0, :, 0, 0], torch.tensor([0.25, 0.5, 0.5]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_global_context_reproduces_forward(name):
    model = _seeded(name, clamp_output=False).eval()
    x = torch.rand(1, 3, 24, 40)
    with torch.no_grad():
        ctx = model.global_context(x)
        assert ctx is not None and all(isinstance(t, torch.Tensor) for t in ctx)
        torch.testing.assert_close(model(x, context=ctx), model(x), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------
# GPGMNet pieces
# --------------------------------------------------------------------------------------


def test_gpgmnet_docstring_lists_design_guesses():
    import hdrvideo.models.gpgmnet as mod

    doc = mod.__doc__
    assert "Design guesses" in doc
    assert len(re.findall(r"^\s*\d+\.\s", doc, flags=re.M)) >= 10


def test_gpgmnet_structure():
    net = GPGMNet(4)
    assert len(net.body) == 5
    assert len(net.gpem.cc_branch) == 5 + 2 and len(net.gpem.ss_branch) == 3 + 2  # blocks + conv + pool
    assert sum(isinstance(m, DropBlock2d) for m in net.modules()) == 8
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 8
    assert sum(isinstance(m, torch.nn.PixelShuffle) for m in net.modules()) == 2
    assert sum(isinstance(m, torch.nn.PixelShuffle) for m in GPGMNet(2).modules()) == 1
    prior = net.gpem(torch.rand(3, 3, 24, 40))
    assert prior.shape == (3, 12)


def test_gpgmnet_bicubic_skip():
    """With a zero tail the network is exactly the bicubic upscale of its input."""
    net = GPGMNet(2, clamp_output=False).eval()
    with torch.no_grad():
        net.tail.weight.zero_()
        net.tail.bias.zero_()
        x = torch.rand(1, 3, 10, 12)
        ref = torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
        torch.testing.assert_close(net(x), ref)


def test_guided_filter_properties():
    const = torch.full((1, 3, 9, 13), 0.3)
    torch.testing.assert_close(guided_filter(const, const, 2, 0.01), const)
    torch.testing.assert_close(box_filter(const, 4), const)  # borders use the clipped window
    x = torch.rand(1, 3, 16, 16)
    # huge eps → a ≈ 0 → output ≈ box-of-box mean; eps → 0 on self-guide → identity
    torch.testing.assert_close(guided_filter(x, x, 1, 1e-12), x, atol=1e-3, rtol=0)
    smooth = guided_filter(x, x, 2, 1e6)
    torch.testing.assert_close(smooth, box_filter(box_filter(x, 2), 2), atol=1e-4, rtol=0)


def test_dropblock_identity_in_eval_and_drops_in_train():
    db = DropBlock2d(0.3, 3)
    x = torch.ones(2, 4, 16, 16)
    db.eval()
    assert torch.equal(db(x), x)
    db.train()
    torch.manual_seed(0)
    y = db(x)
    assert (y == 0).any() and y.max() > 1.0  # dropped blocks, rescaled survivors


# --------------------------------------------------------------------------------------
# AGCM
# --------------------------------------------------------------------------------------


def test_agcm_matlab_taps():
    taps = matlab_bicubic_taps(4)
    assert len(taps) == 16 and abs(sum(taps) - 1) < 1e-12
    assert taps == taps[::-1]


def test_agcm_condition_resize_matches_torch_antialias_in_the_interior():
    x = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 66, 98), 3, 1)  # 64×96, smooth-ish
    m = AGCM()
    a = m.condition_image(x)
    b = torch.nn.functional.interpolate(x, scale_factor=0.25, mode="bicubic", align_corners=False, antialias=True)
    assert a.shape == b.shape == (1, 3, 16, 24)
    torch.testing.assert_close(a[..., 2:-2, 2:-2], b[..., 2:-2, 2:-2], atol=1e-5, rtol=0)
    # MATLAB output size is ceil(H/4); a flat frame stays flat (taps sum to 1, mirrored borders)
    assert m.condition_image(torch.rand(1, 3, 37, 23)).shape == (1, 3, 10, 6)
    flat = torch.full((1, 3, 37, 23), 0.7)
    torch.testing.assert_close(m.condition_image(flat), torch.full((1, 3, 10, 6), 0.7))


def test_agcm_tiny_frames_work():
    with torch.no_grad():
        assert AGCM().eval()(torch.rand(1, 3, 5, 7)).shape == (1, 3, 5, 7)


@pytest.mark.skipif(not AGCM_PTH.is_file(), reason="shared/reference/agcm not available")
def test_agcm_published_weights_reproduce_check_table():
    assert models.sha256_file(AGCM_PTH) == AGCM_SHA256
    model = models.create("agcm")
    sd = torch.load(AGCM_PTH, map_location="cpu", weights_only=True)
    model.load_state_dict(sd, strict=True)
    model.eval()
    table = {
        0.0: (0.0010, 0.0006, 0.0017),
        0.2: (0.2386, 0.2386, 0.2397),
        0.5: (0.4598, 0.4588, 0.4609),
        0.8: (0.5957, 0.5952, 0.5971),
        0.9: (0.6343, 0.6337, 0.6372),
        1.0: (0.7779, 0.7738, 0.7809),
    }
    x = torch.stack([torch.full((3, 128, 128), v) for v in table])
    with torch.no_grad():
        for resize in ("matlab", "antialias", "bicubic"):
            model.condition_resize = resize
            y = model(x)
            for i, (v, rgb) in enumerate(table.items()):
                got = y[i].mean(dim=(1, 2))
                assert float(y[i].std(dim=(1, 2)).max()) < 1e-6  # flat in, flat out
                torch.testing.assert_close(got, torch.tensor(rgb), atol=1e-3, rtol=0, msg=f"v={v} {resize}")
    # also through the public loaders
    loaded = models.load_model(None, AGCM_PTH)
    assert loaded.arch == "agcm" and not loaded.training
    assert models.detect(sd) == "agcm"


# --------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_detect_every_architecture(name):
    sd = models.create(name).state_dict()
    assert models.detect(sd) == name
    assert models.detect({"params_ema": {f"module.{k}": v for k, v in sd.items()}}) == name


def test_detect_unknown_raises_clear_error():
    sd = models.create("irnet-2").state_dict()
    sd["LR_conv.weight"] = torch.zeros(64, 64, 1, 1)
    with pytest.raises(WeightsError) as ei:
        models.detect(sd)
    msg = str(ei.value)
    assert "irnet-2" in msg and "LR_conv.weight" in msg and "(64, 64, 1, 1)" in msg
    with pytest.raises(WeightsError, match="shares no key"):
        models.detect({"foo.weight": torch.zeros(3)})
    assert isinstance(ei.value, ValueError)


# --------------------------------------------------------------------------------------
# weights I/O
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_safetensors_round_trip(tmp_path, name):
    src = _seeded(name, 1).eval()
    path = models.save_weights(src, tmp_path / f"{name}.safetensors", metadata={"trained_on": "unit-test"})
    meta = models.read_metadata(path)
    assert meta["arch"] == name and meta["scale"] == str(src.scale) and meta["trained_on"] == "unit-test"
    dst = models.load_weights(_seeded(name, 2), path).eval()
    for (k, a), (k2, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.rand(1, 3, 16, 20)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))
    auto = models.load_model(None, path)  # arch from metadata (checked against the tensors)
    assert auto.arch == name and not auto.training


def test_pth_round_trip_with_wrappers(tmp_path):
    src = _seeded("irnet-2", 1)
    sd = src.state_dict()
    other = _seeded("irnet-2", 3).state_dict()
    variants = {
        "plain.pth": sd,
        "params.pth": {"params": sd},
        "state_dict.pt": {"state_dict": sd, "epoch": 3},
        "ema.pth": {"params": other, "params_ema": sd},  # EMA preferred, as BasicSR
        "module.pth": {f"module.{k}": v for k, v in sd.items()},
    }
    for fname, obj in variants.items():
        torch.save(obj, tmp_path / fname)
        dst = models.load_weights(_seeded("irnet-2", 2), tmp_path / fname)
        for k, v in sd.items():
            assert torch.equal(dst.state_dict()[k], v), (fname, k)
        assert models.load_model(None, tmp_path / fname).arch == "irnet-2"


def test_load_model_colour_domain_from_metadata(tmp_path):
    m = models.create("irnet-2", colour_domain="ycrcb601")
    path = models.save_weights(m, tmp_path / "official.safetensors")
    assert models.load_model(None, path).colour_domain == "ycrcb601"
    assert models.load_model("irnet-2", path, colour_domain="rgb").colour_domain == "rgb"
    # load_weights applies the domain the weights were saved with
    assert models.load_weights(models.create("irnet-2"), path).colour_domain == "ycrcb601"
    assert models.load_model("irnet-2", path, colour_domain=None).colour_domain == "ycrcb601"
    sd = models.read_state_dict(path)
    assert isinstance(sd, dict) and set(sd) == set(m.state_dict())


def test_mismatched_keys_and_shapes_raise_clear_error(tmp_path):
    sd = models.create("irnet-2").state_dict()
    sd.pop("fea_conv.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["LR_conv.weight"] = torch.zeros(64, 64, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError) as ei:
        models.load_weights(models.create("irnet-2"), path)
    err = ei.value
    msg = str(err)
    assert isinstance(err, ValueError)
    assert "missing 1 key(s): fea_conv.bias" in msg
    assert "unexpected 1 key(s): extra.weight" in msg
    assert "LR_conv.weight (file (64, 64, 1, 1) vs model (64, 64, 3, 3))" in msg
    assert err.missing == ["fea_conv.bias"] and err.unexpected == ["extra.weight"]
    assert err.mismatched == [("LR_conv.weight", (64, 64, 1, 1), (64, 64, 3, 3))]
    assert str(path) in msg


def test_wrong_architecture_error_is_truncated(tmp_path):
    path = models.save_weights(models.create("irnet-5-x4"), tmp_path / "x4.safetensors")
    with pytest.raises(WeightsError) as ei:
        models.load_weights(models.create("irnet-1-48"), path)
    msg = str(ei.value)
    assert "more)" in msg and len(msg) < 2500
    assert len(ei.value.unexpected) > 8  # the full lists stay available on the exception


def test_pth_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"params": models.create("irnet-1-48").state_dict(), "cfg": _IdentityNet}, path)
    with pytest.raises(WeightsError, match="pickled objects other than tensors") as err:
        models.load_weights(models.create("irnet-1-48"), path)
    assert "weights_only" not in str(err.value)  # never suggests unpickling it anyway


def test_bad_paths_and_formats(tmp_path):
    with pytest.raises(FileNotFoundError):
        models.load_weights(models.create("agcm"), tmp_path / "nope.safetensors")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(WeightsError, match="unsupported"):
        models.load_weights(models.create("agcm"), tmp_path / "w.onnx")
    with pytest.raises(WeightsError):
        models.save_weights(models.create("agcm"), tmp_path / "w.pth")
    torch.save({"epoch": 3}, tmp_path / "empty.pth")
    with pytest.raises(WeightsError, match="no tensors"):
        models.load_weights(models.create("agcm"), tmp_path / "empty.pth")


def test_sha256_file(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    assert models.sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize("name", ALL)
def test_training_step_gives_finite_gradients(name):
    model = _seeded(name).train()
    x = torch.rand(2, 3, 32, 32)
    out = model(x)
    assert out.shape[-1] == 32 * model.scale
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
