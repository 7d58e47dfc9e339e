"""Starting a run from another run's weights (`init_from`), at the same or another resolution.

Paper: "Latent Denoising Makes Good Visual Tokenizers" (Yang et al., arXiv:2507.15856), App. A.3: the 512-px
tokenizers and MAR-L are fine-tuned from their 256-px checkpoints. Only the size may differ between the checkpoint
and the run (a tokenizer's `image_size`, a generator's `input_size`): learned position embeddings laid out on the
token grid are resampled to the new grid (`layers.resample_pos_embed`, bicubic as timm's); RoPE tables and fixed
sin-cos embeddings are buffers, outside the weights, and are rebuilt for the new grid by the model itself. A model
names its resampled embeddings in `position_grids()`: {state-dict name: (leading non-grid tokens, grid)}; one
without learned grid positions (RoPE only, a CNN, K learned 1-D latent tokens) has none and loads unchanged.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from detok.layers import resample_pos_embed


def _position_grids(model: nn.Module) -> dict[str, tuple[int, tuple[int, ...]]]:
    hook = getattr(model, "position_grids", None)  # generators without learned grid positions leave it out
    return {} if hook is None else hook()


def matching_state_dict(source: nn.Module, model: nn.Module, folder: str, size_field: str) -> dict[str, torch.Tensor]:
    """The weights of `source` (loaded from `folder`) fitted to `model`.

    Args:
        size_field: the config field that may differ ("image_size" for tokenizers, "input_size" for generators);
            every other field must be equal, except the class's `non_architecture_fields`.

    Raises:
        ValueError: another model class, other architecture fields (all of them named), or a weight whose shape
            depends on the size but that is not a resampled position embedding.
    """
    if type(source) is not type(model):
        raise ValueError(f"init_from={folder} holds a {type(source).__name__}, this run a {type(model).__name__}")
    src, dst = source.config, model.config
    skip = {size_field, *getattr(model, "non_architecture_fields", ())}
    fields = [f.name for f in dataclasses.fields(dst) if f.name not in skip]
    diff = {k: (getattr(src, k), getattr(dst, k)) for k in fields if getattr(src, k) != getattr(dst, k)}
    if diff:
        details = ", ".join(f"{k}: checkpoint {a} vs run {b}" for k, (a, b) in diff.items())
        raise ValueError(
            f"init_from={folder} does not match this run's model ({details})"
            + (" — channel mismatch with the checkpoint" if "channels" in diff else "")
            + f"; only {size_field} may differ"
        )
    state = source.state_dict()
    old, new = _position_grids(source), _position_grids(model)
    for name, (prefix, grid) in new.items():
        state[name] = resample_pos_embed(state[name], old[name][1], grid, prefix)
    target = model.state_dict()
    wrong = [k for k, v in state.items() if k in target and v.shape != target[k].shape]
    if wrong:
        shapes = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}" for k in wrong)
        raise ValueError(
            f"init_from={folder}: at {size_field} {getattr(dst, size_field)} instead of {getattr(src, size_field)}, "
            f"weights change shape that are not resampled position embeddings ({shapes})"
        )
    return state
