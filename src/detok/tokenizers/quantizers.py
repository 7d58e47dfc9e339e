"""Vector quantisation with an ℓ2-normalised codebook (ViT-VQGAN, Yu et al., arXiv:2110.04627; as TiTok and
l-DeTok App. A.7 use it): nearest code by cosine similarity, codebook + β·commitment loss, straight-through
gradients, and the usage statistics that show codebook collapse; optionally the usual remedy for collapse, dead-code
restart (codes unused for a while re-initialised from encoder outputs, as in Jukebox / SoundStream / CVQ-VAE)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class VectorQuantizer(nn.Module):
    """Quantises vectors (…, D) against `codebook_size` learnable codes of dimension D, both ℓ2-normalised.

    `restart_every` N > 0: every N training forwards, the codes no forward has chosen since the last restart are set to
    vectors drawn at random (global RNG) from the current batch's normalised inputs, before the batch is quantised.
    The record of used codes is not saved in checkpoints: a resumed run counts from its resume.
    """

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, restart_every: int = 0):
        super().__init__()
        self.codebook = nn.Embedding(codebook_size, dim)
        self.beta = beta
        self.restart_every = restart_every
        self.calls, self.restarted = 0, 0  # training forwards since the last restart; codes the last restart reset
        self.register_buffer("used", torch.zeros(codebook_size, dtype=torch.bool), persistent=False)  # (K,)
        nn.init.normal_(self.codebook.weight)

    def codes(self) -> torch.Tensor:
        """The normalised codebook (K, D)."""
        return F.normalize(self.codebook.weight, dim=-1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors (…, D) of integer `indices` (…). An embedding, not codes[indices]: that indexing's backward
        adds in thread order on CPU, so training through it would not reproduce bitwise at 2 threads."""
        return F.embedding(indices.long(), self.codes())

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Quantise z (…, D).

        Returns:
            the straight-through quantised vectors (…, D) (forward: the codes; backward: identity to the normalised
            z), the code indices (…), and the losses {"codebook": ‖sg(ẑ) − e‖², "commitment": β·‖ẑ − sg(e)‖²} with
            ẑ = z / ‖z‖.
        """
        z = F.normalize(z.float(), dim=-1)  # (…, D)
        training = self.training and torch.is_grad_enabled() and self.restart_every > 0
        if training and self.calls == self.restart_every:
            self.restart_dead_codes(z.detach().reshape(-1, z.shape[-1]))
        codes = self.codes()  # (K, D)
        indices = (z.reshape(-1, z.shape[-1]) @ codes.t()).argmax(-1).view(z.shape[:-1])  # nearest on the sphere
        if training:
            self.used[indices.reshape(-1)] = True
            self.calls += 1
        q = F.embedding(indices, codes)  # (…, D): lookup() on the codes normalised above
        losses = {"codebook": F.mse_loss(q, z.detach()), "commitment": self.beta * F.mse_loss(z, q.detach())}
        return z + (q - z).detach(), indices, losses

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor) -> None:
        """Set every code unused since the last restart to a random row of z (M, D), then start a new record."""
        dead = (~self.used).nonzero().squeeze(1)  # (K_dead,)
        if len(dead):
            pick = torch.randint(len(z), (len(dead),), device=z.device)
            self.codebook.weight[dead] = z[pick].to(self.codebook.weight.dtype)
        self.restarted, self.calls = len(dead), 0
        self.used.zero_()

    @staticmethod
    def usage(indices: torch.Tensor, codebook_size: int) -> dict[str, torch.Tensor]:
        """Code usage of a batch of `indices`: the fraction of the codebook used and the perplexity exp(H(p))."""
        counts = torch.bincount(indices.reshape(-1).long(), minlength=codebook_size).float()  # (K,)
        p = counts / counts.sum()
        entropy = -(p[p > 0] * p[p > 0].log()).sum()
        return {"code_usage": (counts > 0).float().mean(), "perplexity": entropy.exp()}
