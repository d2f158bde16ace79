"""A tiny deterministic training run: same losses twice with the same seed; resume continues exactly."""

import pytest
import torch

from hdrvideo.training.train import TrainConfig, train, warm_start


class TinyPairs:
    """In-memory pairs: HDR = a fixed smooth function of SDR (learnable), at a given scale."""

    def __init__(self, scale=1, n=4, size=16):
        g = torch.Generator().manual_seed(0)
        self.scale = scale
        hr = torch.rand(n, 3, size * scale, size * scale, generator=g)
        lr = torch.nn.functional.avg_pool2d(hr, scale) if scale > 1 else hr
        self.sdr = (lr * 255).round().to(torch.uint8)
        self.hdr = ((0.2 + 0.5 * hr**1.5) * 65535).round().to(torch.int32)

    def __len__(self):
        return self.sdr.shape[0]

    def variants(self, i):
        return 1

    def get(self, i, variant=0):
        return self.sdr[i], self.hdr[i]

    def name(self, i):
        return f"img{i}"


def cfg(tmp_path, name, **kw):
    base = dict(arch="irnet-1-48", out_dir=str(tmp_path / name), steps=6, batch=2, patch=8, lr=1e-3,
                seed=3, threads=1, checkpoint_every=100, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def losses(result):
    return [h["loss"] for h in result["history"]]


def test_same_seed_same_losses_and_resume(tmp_path):
    src = TinyPairs()
    a = train(cfg(tmp_path, "a"), progress=False, source=src)
    b = train(cfg(tmp_path, "b"), progress=False, source=src)
    assert losses(a) == losses(b) and len(losses(a)) == 6
    assert a["finished"] and (tmp_path / "a" / "irnet-1-48.safetensors").is_file()
    # 2 cosine cycles over 6 steps (T_0 = 2, T_mult = 2): a snapshot at the end of the first
    assert (tmp_path / "a" / "irnet-1-48-step2.safetensors").is_file()
    c = train(cfg(tmp_path, "c", seed=4), progress=False, source=src)
    assert losses(c) != losses(a)
    # interrupted after 2 steps, then resumed: identical to the uninterrupted run
    d1 = train(cfg(tmp_path, "d"), progress=False, source=src, stop_after=2)
    assert d1["step"] == 2 and not d1["finished"] and "weights" not in d1
    d2 = train(cfg(tmp_path, "d"), resume=True, progress=False, source=src)
    assert d2["step"] == 6 and losses(d2) == losses(a)
    # weights load into a fresh model and reproduce the trained output
    from hdrvideo.models import create, load_weights

    m = load_weights(create("irnet-1-48"), str(tmp_path / "a" / "irnet-1-48.safetensors")).eval()
    x = src.sdr[:1].float() / 255
    assert m(x).shape == (1, 3, 16, 16)


def test_sr_arch_step_and_warm_start(tmp_path):
    src = TinyPairs(scale=2, n=2, size=8)
    r = train(cfg(tmp_path, "sr", arch="irnet-5-x2", steps=2, patch=4), progress=False, source=src)
    assert r["finished"]
    from hdrvideo.models import create

    x4 = create("irnet-5-x4")
    copied = warm_start(x4, tmp_path / "sr" / "checkpoint.safetensors")
    # the shared body (everything but the ×2 upsampler) is copied into the ×4 network
    assert "fea_conv.weight" in copied and not any(k.startswith("upsampler") for k in copied)
    from hdrvideo.training.train import load_checkpoint

    assert torch.equal(x4.state_dict()["fea_conv.weight"],
                       load_checkpoint(tmp_path / "sr" / "checkpoint.safetensors")["model"]["fea_conv.weight"])


def test_bf16_autocast_trains_float32_weights(tmp_path):
    """--precision bf16: forward passes under bfloat16 autocast, weights and optimiser float32;
    it learns (the loss falls like fp32's) and its losses differ from fp32's (autocast is on)."""
    from safetensors.torch import load_file

    src = TinyPairs()
    kw = dict(steps=12, lr=3e-3, cycles=1)
    f32 = train(cfg(tmp_path, "f32", **kw), progress=False, source=src)
    b16 = train(cfg(tmp_path, "b16", precision="bf16", **kw), progress=False, source=src)
    lf, lb = losses(f32), losses(b16)
    assert lb != lf
    assert lb[-1] < 0.8 * lb[0] and abs(lb[-1] - lf[-1]) < 0.25 * lf[-1], (lf, lb)
    weights = load_file(str(tmp_path / "b16" / "irnet-1-48.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values())
    import pytest

    with pytest.raises(ValueError, match="precision"):
        train(cfg(tmp_path, "bad", precision="fp8"), progress=False, source=src)


def test_fixed_pattern_loss_sees_a_checkerboard_not_texture():
    from hdrvideo.training.train import fixed_pattern_loss

    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 32, 48, generator=g)
    pattern = torch.tensor([[0.02, -0.01, 0.0, -0.01]] * 4) - torch.tensor([[0.0], [0.01], [-0.01], [0.0]])
    checker = target + pattern.repeat(8, 12)  # one offset per position of every 4×4 block
    noisy = target + 0.02 * torch.randn(target.shape, generator=g)  # as large, but no fixed pattern
    assert fixed_pattern_loss(checker, target, 4) == pytest.approx(float((pattern - pattern.mean()).abs().mean()), rel=1e-5)
    assert fixed_pattern_loss(noisy, target, 4) < 0.15 * fixed_pattern_loss(checker, target, 4)
    assert fixed_pattern_loss(target + 0.05, target, 4) == pytest.approx(0.0, abs=1e-7)  # a uniform offset is L1's
    assert float(fixed_pattern_loss(checker, target, 1)) == 0.0
