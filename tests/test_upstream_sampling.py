"""The generators sample on the official schedules: LightningDiT's shifted time grid and MAR's CFG schedule.

Fixtures written by benchmarks/upstream/make_fixtures.py from Jiawei-Yang/DeTok's own code (meta.json names the
commit): the time points of its `Sampler.sample_ode(euler, num_steps, timestep_shift=0.3)`, and the guidance scale
and row count its `MAR.sample_tokens` hands to DiffLoss at every step.
"""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from detok import create_model
from detok.objectives.flow import FlowMatching
from detok.registry import preset_config

FIXTURE = Path(__file__).parent / "fixtures" / "upstream" / "detok_sampling"


@pytest.fixture(scope="module")
def io():
    return load_file(str(FIXTURE / "io.safetensors"))


def test_fixture_comes_from_the_upstream_code():
    meta = json.loads((FIXTURE / "meta.json").read_text())
    assert meta["upstream"] == "Jiawei-Yang/DeTok" and meta["commit"] and not meta["dirty"]


@pytest.mark.parametrize("preset", ["lightningdit-b", "lightningdit-xl"])
def test_lightningdit_paper_grid_is_upstreams(io, preset):
    flow = preset_config(preset).flow
    grid = FlowMatching(flow)._grid(flow.sample_steps)
    expected = io["lightningdit.grid250"]  # float32 upstream
    assert grid.shape == expected.shape
    assert torch.allclose(grid, expected, rtol=1e-5, atol=1e-6)
    assert grid[len(grid) // 2] < 0.5  # the steps crowd near the noise (t = 0), not the data


def test_lightningdit_grid_at_other_step_counts(io):
    flow = dataclasses.replace(preset_config("lightningdit-b").flow, sample_steps=49)
    assert torch.allclose(FlowMatching(flow)._grid(49), io["lightningdit.grid50"], rtol=1e-5, atol=1e-6)


def test_lightningdit_guidance_interval_is_upstreams():
    """Upstream guides while t ≥ 0.10 (noise→data time): noise levels in [0, 0.9]."""
    assert preset_config("lightningdit-b").cfg_interval == (0.0, 0.9)


def _mar_schedule(monkeypatch, num_tokens: int, num_iter: int, schedule: str = "linear") -> torch.Tensor:
    side = int(num_tokens**0.5)
    cfg = preset_config("mar-b-tiny")
    cfg = dataclasses.replace(cfg, input_size=(side, side), patch_size=1, num_iter=num_iter, cfg_schedule=schedule)
    model = create_model("mar-b-tiny", **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}).eval()
    record = []

    def recorder(cond, temperature=1.0, cfg_scale=1.0, generator=None):
        record.append((cfg_scale, cond.shape[0]))
        rows = cond.shape[0] // 2 if cfg_scale != 1.0 else cond.shape[0]
        return torch.zeros(rows, cfg.token_dim)

    monkeypatch.setattr(model.diffloss, "sample", recorder)
    model.sample(torch.tensor([1, 2]), cfg_scale=3.0, generator=torch.Generator().manual_seed(0))
    return torch.tensor(record, dtype=torch.float64)


@pytest.mark.parametrize("tokens, steps", [(16, 8), (256, 64)])
def test_mar_cfg_schedule_is_upstreams(io, monkeypatch, tokens, steps):
    expected = io[f"mar.L{tokens}.K{steps}.cfg3"]  # (steps, 2): scale, rows
    got = _mar_schedule(monkeypatch, tokens, steps)
    assert torch.allclose(got[:, 0], expected[:, 0], rtol=1e-6)
    assert torch.equal(got[:, 1], expected[:, 1])  # the same tokens predicted at every step
    assert got[-1, 0] == pytest.approx(1 + 2 * (tokens - 1) / tokens)  # the last step does not reach the full 3


def test_mar_linear_full_reaches_the_scale(monkeypatch):
    got = _mar_schedule(monkeypatch, 16, 8, "linear-full")
    assert got[-1, 0] == 3.0 and torch.equal(got[:-1, 0], _mar_schedule(monkeypatch, 16, 8)[:-1, 0])
