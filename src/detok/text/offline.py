"""A small text encoder detok trains itself: a word-level transformer learned CLIP-style against the images' pixels.

Paper: "Learning Transferable Visual Models From Natural Language Supervision" (CLIP; Radford et al.,
arXiv:2103.00020), §2.3 and Fig. 3: a text tower and an image tower trained from scratch with a symmetric InfoNCE loss
over a batch's image–caption pairs and a learned temperature. Here at Fashion-MNIST scale, as the offline stand-in for
CLIP-L (the l-DeTok paper's text encoder, App. C): the text tower is a pre-norm transformer over a word vocabulary
(the words of the caption set it is trained on); the image tower is a small CNN on raw pixels, trained jointly from
scratch. Neither sees a class label or an evaluator's features: the only supervision is which caption goes with
which image.

As a text encoder (`text/encoders.py`) the text tower's token-level outputs (N, max_length, width), after its final
norm, padding positions included (they attend to the caption's words only), condition the T2I generators, as CLIP-L's
last hidden state does in the paper. The image tower is a training device and stays in the saved folder unused.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from detok.config import PositiveFloat, PositiveInt, check_fields
from detok.layers import Attention
from detok.registry import register_with_tiny

PAD, UNK = "[pad]", "[unk]"  # token ids 0 and 1, before the vocabulary's words


def words(caption: str) -> list[str]:
    """The words of a caption: lower case, split at anything but letters, digits, hyphens and apostrophes."""
    return re.findall(r"[a-z0-9'-]+", caption.lower())


@dataclass(frozen=True)
class WordCLIPConfig:
    """Both towers; `vocab` is filled from the training captions by `detok text-encoder train`.

    Attributes:
        vocab: the words the text tower knows (ids 2…; 0 pads, 1 stands for any other word).
        max_length: the context: captions of more words are cut after their first `max_length` words.
        width, depth, heads: the text transformer; its token outputs have `width` channels.
        embed_dim: the shared embedding space of the contrastive loss.
        image_widths: the image tower's conv stages (each a stride-2 3×3 conv and a 3×3 conv, GELU).
    """

    vocab: tuple[str, ...] = ()
    max_length: PositiveInt = 16
    width: PositiveInt = 64
    depth: PositiveInt = 2
    heads: PositiveInt = 4
    mlp_ratio: PositiveFloat = 4.0
    embed_dim: PositiveInt = 64
    image_size: PositiveInt = 32
    channels: PositiveInt = 1
    image_widths: tuple[int, ...] = (16, 32, 64)

    def __post_init__(self):
        check_fields(self)
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by {self.heads} heads")
        if len(set(self.vocab)) != len(self.vocab) or {PAD, UNK} & set(self.vocab):
            raise ValueError("vocab must hold distinct words, without the reserved [pad] and [unk]")
        if not self.image_widths or any(w <= 0 for w in self.image_widths):
            raise ValueError(f"image_widths must be positive, got {self.image_widths}")


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm → attention, LayerNorm → GELU MLP) with a key-padding mask."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attn_mask=attn_mask)  # (N, L, D)
        return x + self.mlp(self.norm2(x))  # (N, L, D)


class WordCLIP(nn.Module):
    """Word-level text transformer + pixel CNN, trained contrastively; the text tower's tokens condition generators."""

    kind = "text-encoder"
    config_cls = WordCLIPConfig
    trained_with_labels = False  # captions and pixels only

    def __init__(self, config: WordCLIPConfig):
        super().__init__()
        self.config = config
        d = config.width
        self.word_index = {w: i + 2 for i, w in enumerate(config.vocab)}

        # Text tower
        self.token_embed = nn.Embedding(len(config.vocab) + 2, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.max_length, d))
        self.blocks = nn.ModuleList(Block(d, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.norm = nn.LayerNorm(d)
        self.text_proj = nn.Linear(d, config.embed_dim)

        # Image tower
        layers, c_in = [], config.channels
        for w in config.image_widths:
            layers += [nn.Conv2d(c_in, w, 3, stride=2, padding=1), nn.GELU(), nn.Conv2d(w, w, 3, padding=1), nn.GELU()]
            c_in = w
        self.image_tower = nn.Sequential(*layers)
        self.image_proj = nn.Linear(c_in, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature
        self.initialize_weights()

    def initialize_weights(self) -> None:
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    # ----------------------------------------------------------------------------------------------
    # Text tower
    # ----------------------------------------------------------------------------------------------

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Word ids (N, max_length) and mask (N, max_length) (True = a word) of captions, keeping each caption's first
        `max_length` words; also each caption's length in words before the cut (N,) and how many words were unknown
        (mapped to [unk]). An empty caption raises."""
        cfg = self.config
        ids = torch.zeros(len(captions), cfg.max_length, dtype=torch.long)
        lengths = torch.zeros(len(captions), dtype=torch.long)
        unknown = 0
        for i, caption in enumerate(captions):
            found = words(caption)
            if not found:
                raise ValueError(f"caption {i + 1} ({caption!r}) has no words")
            lengths[i] = len(found)
            row = [self.word_index.get(w, 1) for w in found[: cfg.max_length]]
            unknown += row.count(1)
            ids[i, : len(row)] = torch.tensor(row)
        return ids, ids > 0, lengths, unknown

    def forward_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Word ids (N, L) and mask (N, L) → token outputs (N, L, width) after the final norm; every position (padding
        too) attends to the caption's words only."""
        h = self.token_embed(ids) + self.pos_embed[:, : ids.shape[1]]  # (N, L, D)
        attn_mask = mask[:, None, None, :]  # (N, 1, 1, L): keys that are words
        for block in self.blocks:
            h = block(h, attn_mask)  # (N, L, D)
        return self.norm(h)  # (N, L, D)

    def text_embedding(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unit-norm caption embeddings (N, E): the mean of the word positions' outputs, projected."""
        h = self.forward_text(ids, mask)  # (N, L, D)
        m = mask[..., None].to(h.dtype)  # (N, L, 1)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1)  # (N, D)
        return F.normalize(self.text_proj(pooled), dim=-1)  # (N, E)

    # ----------------------------------------------------------------------------------------------
    # Image tower and loss
    # ----------------------------------------------------------------------------------------------

    def image_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] → unit-norm embeddings (N, E)."""
        h = self.image_tower(x).mean(dim=(2, 3))  # (N, C_last)
        return F.normalize(self.image_proj(h), dim=-1)  # (N, E)

    def forward(self, x: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE (CLIP Fig. 3) over the batch's pairs: images (N, C, H, W), their captions (N, L)."""
        img, txt = self.image_embedding(x), self.text_embedding(ids, mask)  # (N, E) each
        logits = self.logit_scale.clamp(max=math.log(100)).exp() * img @ txt.T  # (N, N)
        target = torch.arange(len(x), device=x.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------


def _fmnist32() -> WordCLIPConfig:
    return WordCLIPConfig()


def _tiny(cfg: WordCLIPConfig) -> WordCLIPConfig:
    """Tiny twin for tests: width 16, one block, 12 words of context, a two-stage 8/16 image tower."""
    return dataclasses.replace(cfg, max_length=12, width=16, depth=1, heads=2, embed_dim=16, image_widths=(8, 16))


register_with_tiny(
    "text-encoder-fmnist32",
    _fmnist32,
    "detok's offline text encoder for Fashion-MNIST-32 captions: a 2-block word transformer (width 64, 4 heads, 16 "
    "words of context) trained CLIP-style against a 16/32/64 pixel CNN, label-free; its 16 × 64 token outputs "
    "condition t2i-*-fmnist32.",
    kind="text-encoder",
    model_cls=WordCLIP,
    tiny=_tiny,
)
