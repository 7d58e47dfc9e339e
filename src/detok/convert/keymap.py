"""Key maps between an upstream state dict and a detok one, as data: import and export read the same table.

A `KeyMap` is a list of rules `(upstream name, detok name, transform)`. Names may hold `{i}` (a block index) and
`{w}` (weight or bias, etc.: any one name part); a transform is a pair of functions, upstream → detok and back,
that rearrange one tensor exactly (a permutation or a reshape: no arithmetic, so a round trip is bit-exact).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from detok.checkpoint import CheckpointError


@dataclass(frozen=True)
class Transform:
    """How one tensor is laid out upstream vs in detok; both directions exact."""

    name: str
    to_detok: Callable[[torch.Tensor], torch.Tensor]
    to_upstream: Callable[[torch.Tensor], torch.Tensor]


SAME = Transform("same", lambda t: t, lambda t: t)
# A Conv2d(C, D, p, stride=p) patch embedding (D, C, p, p) as a Linear over `layers.patchify`'s (p, p, C) patches.
PATCH_CONV = Transform(
    "patch-conv→linear",
    lambda t: t.permute(0, 2, 3, 1).reshape(t.shape[0], -1),
    lambda t: t,  # replaced per tensor by `KeyMap.to_upstream`, which knows the upstream shape
)
# A 1×1 Conv2d (D_out, D_in, 1, 1) as a Linear (D_out, D_in).
CONV1X1 = Transform("conv1x1→linear", lambda t: t[:, :, 0, 0], lambda t: t[:, :, None, None])


def _regex(pattern: str) -> re.Pattern:
    parts = re.split(r"(\{i\}|\{w\})", pattern)
    body = "".join({"{i}": r"(?P<i>\d+)", "{w}": r"(?P<w>[A-Za-z_]+)"}.get(p, re.escape(p)) for p in parts)
    return re.compile(f"^{body}$")


class KeyMap:
    """A table of (upstream name, detok name, transform) rules; see the module docstring."""

    def __init__(self, rules: list[tuple[str, str, Transform]]):
        self.rules = rules
        self._up = [(_regex(u), d, t) for u, d, t in rules]
        self._down = [(_regex(d), u, t) for u, d, t in rules]

    def to_detok(self, state: dict[str, torch.Tensor], what: str) -> tuple[dict[str, torch.Tensor], dict[str, tuple]]:
        """Rename and rearrange an upstream state dict; every key must match a rule (none is silently dropped).

        Returns:
            (detok state dict, {detok name: upstream shape}) — the shapes let `to_upstream` invert reshapes.
        """
        out, shapes, unmatched = {}, {}, []
        for key, tensor in state.items():
            for regex, target, transform in self._up:
                m = regex.match(key)
                if m:
                    name = target.format(**m.groupdict())
                    out[name] = transform.to_detok(tensor).contiguous()
                    shapes[name] = tuple(tensor.shape)
                    break
            else:
                unmatched.append(key)
        if unmatched:
            shown = ", ".join(unmatched[:6]) + (" …" if len(unmatched) > 6 else "")
            raise CheckpointError(f"{what}: {len(unmatched)} weight(s) this converter does not know: {shown}")
        return out, shapes

    def to_upstream(self, state: dict[str, torch.Tensor], upstream_shape: Callable[[str, torch.Tensor], tuple]):
        """The inverse of `to_detok`: detok names → upstream names, tensors laid out as upstream has them.

        Args:
            upstream_shape: (upstream name, detok tensor) → the upstream tensor's shape, for reshapes to invert.
        """
        out = {}
        for key, tensor in state.items():
            for regex, target, transform in self._down:
                m = regex.match(key)
                if m:
                    name = target.format(**m.groupdict())
                    if transform is PATCH_CONV:
                        d, c, p, _ = upstream_shape(name, tensor)
                        out[name] = tensor.reshape(d, p, p, c).permute(0, 3, 1, 2).contiguous()
                    else:
                        out[name] = transform.to_upstream(tensor).contiguous()
                    break
            else:
                raise ValueError(f"detok weight {key!r} has no upstream counterpart in this key map")
        return out


# --------------------------------------------------------------------------------------------------
# Joined tensors: several upstream weights held as one detok weight
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Join:
    """Upstream tensors concatenated along dim 0 into one, under the name `name`, which a `KeyMap` rule then maps
    (MAR's class table and its separate null-class row `fake_latent` → detok's one table, null class last).

    `rows` holds each part's row count, None for the one part whose count follows from the joined tensor.
    """

    parts: tuple[str, ...]
    rows: tuple[int | None, ...]

    @property
    def name(self) -> str:
        return "+".join(self.parts)


def join_tensors(state: dict[str, torch.Tensor], joins: list[Join], what: str) -> dict[str, torch.Tensor]:
    """`state` with each join's parts replaced by their concatenation (at the first part's place); exact."""
    out = dict(state)
    for join in joins:
        present = [p for p in join.parts if p in state]
        if not present:
            continue
        if len(present) < len(join.parts):
            missing = ", ".join(p for p in join.parts if p not in state)
            raise CheckpointError(f"{what}: {', '.join(present)} without {missing}")
        for part, rows in zip(join.parts, join.rows):
            if rows is not None and state[part].shape[0] != rows:
                raise CheckpointError(f"{what}: {part} has {state[part].shape[0]} rows, expected {rows}")
        joined = torch.cat([state[p] for p in join.parts])
        current, out = out, {}
        for key, tensor in current.items():
            if key == join.parts[0]:
                out[join.name] = joined
            elif key not in join.parts:
                out[key] = tensor
    return out


def split_tensors(state: dict[str, torch.Tensor], joins: list[Join]) -> dict[str, torch.Tensor]:
    """The inverse of `join_tensors`: each joined tensor split back into its parts, in place; exact."""
    out = {}
    for key, tensor in state.items():
        join = next((j for j in joins if j.name == key), None)
        if join is None:
            out[key] = tensor
            continue
        known = sum(r for r in join.rows if r is not None)
        sizes = [tensor.shape[0] - known if r is None else r for r in join.rows]
        for part, piece in zip(join.parts, tensor.split(sizes)):
            out[part] = piece.contiguous()
    return out


# --------------------------------------------------------------------------------------------------
# Reading an architecture off a state dict (shared by the format modules)
# --------------------------------------------------------------------------------------------------


def count_indexed(state: dict[str, torch.Tensor], prefix: str) -> int:
    """How many modules `prefix.0.…`, `prefix.1.…`, … a state dict holds (a stack of blocks, the levels of a CNN)."""
    pattern = re.compile(rf"{re.escape(prefix)}\.(\d+)\.")
    found = {int(m.group(1)) for k in state for m in [pattern.match(k)] if m}
    return max(found) + 1 if found else 0


def heads_for(width: int, side: str, given: dict[str, int], by_width: dict[int, int], what: str) -> int:
    """Attention heads, which no state dict stores: given on the command line (`given[side]`), or the upstream's size
    table by width (`by_width`); `side` is "enc" or "dec", `what` names the upstream's sizes in the message."""
    if side in given:
        return given[side]
    if width not in by_width:
        raise CheckpointError(
            f"the {dict(enc='encoder', dec='decoder')[side]} width {width} is not one of {what} "
            f"{sorted(by_width)}, and the number of attention heads is not stored in the weights: give it with "
            f"--set model.{side}_heads=N"
        )
    return by_width[width]
