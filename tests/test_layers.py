"""Shared primitives: RoPE is relative, patchify inverts, RMSNorm normalises, configs validate overrides."""

from dataclasses import dataclass, field

import pytest
import torch

from detok import create_model, list_models
from detok.config import apply_overrides
from detok.layers import RMSNorm, apply_rope, grid_positions, patchify, rope_tables, unpatchify


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(16), torch.randn(16)
    pos = torch.tensor([[0.0, 0.0], [2.0, 3.0], [5.0, 1.0], [7.0, 4.0]])
    rope = rope_tables(pos, 16)
    rq = apply_rope(q.expand(4, 16), rope)
    rk = apply_rope(k.expand(4, 16), rope)
    # (0,0)-(2,3) and (5,1)-(7,4) have the same offset, so the same score
    assert torch.allclose(rq[0] @ rk[1], rq[2] @ rk[3], atol=1e-5)
    assert not torch.allclose(rq[0] @ rk[1], rq[0] @ rk[2], atol=1e-3)
    assert torch.allclose(rq.norm(dim=-1), q.norm().expand(4), atol=1e-5)  # rotations keep norms


def test_rope_rejects_bad_head_dim():
    with pytest.raises(ValueError, match="head_dim"):
        rope_tables(grid_positions(2, 2), 6)


def test_patchify_roundtrip():
    x = torch.randn(2, 3, 8, 12)
    p = patchify(x, 4)
    assert p.shape == (2, 6, 48)
    assert torch.equal(unpatchify(p, 4, 3, (2, 3)), x)
    assert torch.equal(p[0, 1], x[0, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1))
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.randn(1, 1, 10, 10), 4)


def test_rmsnorm_unit_rms():
    x = torch.randn(5, 64) * 7 + 3
    y = RMSNorm(64)(x)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(5), atol=1e-4)


@dataclass(frozen=True)
class _Inner:
    a: int = 1
    b: float = 0.5


@dataclass(frozen=True)
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    name: str = "x"
    maybe: str | None = None


def test_overrides_are_typed_and_validated():
    cfg = apply_overrides(_Outer(), ["inner.a=3", "inner.b=2", "name=hello", "maybe=null"])
    assert cfg == _Outer(_Inner(3, 2.0), "hello", None)
    with pytest.raises(KeyError, match="no field 'c'"):
        apply_overrides(_Outer(), ["inner.c=1"])
    with pytest.raises(TypeError, match="integer"):
        apply_overrides(_Outer(), ["inner.a=1.5"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(_Outer(), ["inner.a"])


@pytest.mark.parametrize("name", list_models("*-tiny"))
def test_model_buffers_are_real_floats(name):
    """NCCL cannot broadcast complex tensors (DDP syncs buffers), and `.to(dtype)` drops imaginary parts."""
    model = create_model(name)
    bad = {n: b.dtype for n, b in model.named_buffers() if b.is_complex()}
    assert not bad, bad
    halved = {n: b for n, b in create_model(name).to(torch.bfloat16).named_buffers()}
    for n, b in model.named_buffers():
        if b.is_floating_point():
            assert torch.allclose(halved[n].float(), b, atol=0.02 * max(1.0, b.abs().max().item())), n


def test_configs_built_in_python_reject_unknown_choices_and_bad_counts():
    """Typos in Literal fields raise at construction, not only when parsed from overrides."""
    from detok.data import DataConfig
    from detok.generators.ar import CausalARConfig
    from detok.objectives.flow import FlowConfig
    from detok.tokenizers.corruption import CorruptionConfig
    from detok.training.common import TrainConfig

    for build, field_name in (
        (lambda: CorruptionConfig(mask_mode="const"), "mask_mode"),
        (lambda: CorruptionConfig(tau_dist="logitnormal"), "tau_dist"),
        (lambda: TrainConfig(precision="bf32"), "precision"),
        (lambda: TrainConfig(lr_schedule="linear"), "lr_schedule"),
        (lambda: DataConfig(resize="crop"), "resize"),
        (lambda: FlowConfig(sampler="rk4"), "sampler"),
        (lambda: CausalARConfig(order="zigzag"), "order"),
    ):
        with pytest.raises(ValueError, match=f"{field_name} must be one of"):
            build()
    for bad in ({"grad_clip": 0.0}, {"log_every": 0}, {"keep_checkpoints": 0}, {"sample_every": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)
    assert CorruptionConfig(mask_mode="constant").mask_mode == "constant"
