"""Optimiser helpers against hand values: warm-up + cosine schedule, EMA decay and its warm-up, AdamW groups."""

import math

import pytest
import torch
import torch.nn as nn

from detok import create_model
from detok.optim import EMA, lr_at, param_groups


def test_warmup_then_cosine_by_hand():
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)  # linear warm-up: (step + 1) / warmup_steps
    assert lr_at(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 10, min_lr=0.2) == pytest.approx(1.0)  # the cosine starts at the peak
    assert lr_at(55, 100, 1.0, 10, min_lr=0.2) == pytest.approx(0.2 + 0.4 * (1 + math.cos(math.pi / 2)))  # half way
    assert lr_at(100, 100, 1.0, 10, min_lr=0.2) == pytest.approx(0.2)
    assert lr_at(50, 100, 1.0, 10, schedule="constant") == 1.0
    assert lr_at(0, 100, 1.0, 0) == pytest.approx(1.0)  # no warm-up
    with pytest.raises(ValueError, match="unknown lr schedule"):
        lr_at(50, 100, 1.0, 10, schedule="linear")


def test_ema_decay_and_warmup_by_hand():
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    ema = EMA(model, decay=0.5, warmup=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(2.0)
    ema.update(model)  # 0.5 · old + 0.5 · new
    assert torch.allclose(ema.model.weight, torch.full((1, 2), 0.5)) and torch.allclose(ema.model.bias, torch.ones(1))
    warm = EMA(model, decay=0.999)
    assert warm.current_decay() == pytest.approx(1 / 10)  # (1 + n) / (10 + n) at n = 0
    warm.update(model)
    assert warm.current_decay() == pytest.approx(2 / 11)


def test_no_weight_decay_on_biases_norms_positions_and_tokens():
    model = create_model("detok-fmnist32-tiny")
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert {"mask_token", "enc_pos", "dec_pos"} <= kept
    assert all(
        n.endswith(".bias") or p.ndim < 2 or n in ("mask_token", "enc_pos", "dec_pos")
        for n, p in ((names[id(p)], p) for p in no_decay["params"])
    )
    assert decay["params"] and all(p.ndim >= 2 and names[id(p)].endswith(".weight") for p in decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
