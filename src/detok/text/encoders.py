"""Text encoders behind one interface, and the cached embeddings of a caption set.

A text encoder is frozen and gives token-level outputs: captions → (N, L, D) with L its context (`max_length`; every
caption is padded to it) and D its width. Two kinds, named by a spec:

- a Hugging Face `transformers` text model in a local folder (`hf:FOLDER`, or a folder whose config.json has a
  `model_type`): CLIP-L's text tower as in the paper (App. C; a full CLIP or SigLIP folder loads its text tower only),
  T5's encoder, BERT, … with the tokenizer saved beside it. Loaded with `local_files_only=True`: nothing is fetched
  from a hub at run time. Needs `pip install 'detok[text]'`.
- detok's offline encoder (`detok:FOLDER`, a `detok text-encoder train` run, or a text-encoder preset's name for its
  cache folder): text/offline.py.

Captions longer than the context are truncated at the end: the first tokens are kept (with the tokenizer's end token,
where it adds one) and the rest is cut; `encode` warns with the count, and records it.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from detok.checkpoint import publish, read_weights, weights_digest, write_json

# Files one of which a Hugging Face tokenizer needs (fast tokenizer, BPE vocabulary, WordPiece, SentencePiece).
HF_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model", "tokenizer.model",
                      "sentencepiece.bpe.model")  # fmt: skip
HF_INSTALL = "pip install 'detok[text]'"


@dataclass
class EncodedText:
    """Token outputs (N, L, D) float32 on the CPU, the mask of real tokens (N, L), each caption's length in tokens
    before truncation (N,), and how many captions were truncated."""

    tokens: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    truncated: int


class TextEncoder:
    """A frozen text encoder: `encode(captions)` → `EncodedText`. Subclasses set `name` (names the encoder and its
    weights; keys the embedding cache), `dim`, `max_length` and `truncation` (where a long caption is cut, in words)
    and implement `tokenize` and `forward_tokens`."""

    name: str
    dim: int
    max_length: int
    truncation: str
    device: torch.device

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token ids (N, L), mask (N, L) and lengths before truncation (N,)."""
        raise NotImplementedError

    def forward_tokens(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token outputs (N, L, D) of tokenised captions."""
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, captions: list[str], batch_size: int = 256) -> EncodedText:
        """Token outputs of `captions`, in batches; warns once if some were truncated to the context."""
        if not captions:
            raise ValueError("no captions to encode")
        parts, masks, lengths = [], [], []
        for start in range(0, len(captions), batch_size):
            ids, mask, length = self.tokenize(captions[start : start + batch_size])
            parts.append(self.forward_tokens(ids.to(self.device), mask.to(self.device)).float().cpu())
            masks.append(mask.cpu())
            lengths.append(length)
        lengths = torch.cat(lengths)
        cut = torch.nonzero(lengths > self.max_length).flatten()
        if len(cut):
            warnings.warn(
                f"{len(cut)} of {len(captions)} captions are longer than the text encoder's context of "
                f"{self.max_length} tokens and were truncated at the end ({self.truncation}), e.g. caption "
                f"{int(cut[0]) + 1} ({int(lengths[cut[0]])} tokens): {captions[int(cut[0])]!r}",
                stacklevel=3,  # the caller of `encode` (no_grad's wrapper is one frame)
            )
        return EncodedText(torch.cat(parts), torch.cat(masks), lengths, len(cut))


# --------------------------------------------------------------------------------------------------
# Hugging Face text models
# --------------------------------------------------------------------------------------------------


class HFTextEncoder(TextEncoder):
    """A `transformers` text model and its tokenizer from a local folder, frozen, in eval mode.

    Args:
        max_length: the context L; default: the tokenizer's `model_max_length` (77 for CLIP), else the model's
            `max_position_embeddings`; an encoder with neither (T5's relative positions) needs it stated.
        attention_mask: pass the padding mask to the model. Default: not for CLIP-style causal text towers (U-ViT
            and Stable Diffusion use all 77 outputs of CLIP run without it; the caption's own tokens never see the
            padding anyway), yes for every other encoder.
    """

    def __init__(
        self,
        folder: str | Path,
        device: str | torch.device = "cpu",
        max_length: int | None = None,
        attention_mask: bool | None = None,
    ):
        folder = Path(folder)
        try:
            import transformers
        except ImportError as e:
            raise ImportError(f"a Hugging Face text encoder needs transformers: {HF_INSTALL}") from e
        if not any((folder / f).is_file() for f in HF_TOKENIZER_FILES):
            raise FileNotFoundError(
                f"text encoder folder {folder} has no tokenizer (none of {', '.join(HF_TOKENIZER_FILES)}): save it "
                f"beside the model, e.g. AutoTokenizer.from_pretrained(...).save_pretrained('{folder}')"
            )
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
            config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
            if getattr(config, "text_config", None) is not None:  # two towers (CLIP, SigLIP): the text tower only
                cls = getattr(transformers, type(config).__name__.removesuffix("Config") + "TextModel")
                model = cls.from_pretrained(folder, local_files_only=True)
            else:
                model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
                if getattr(model.config, "is_encoder_decoder", False):  # T5, BART: the encoder
                    model = model.get_encoder()
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise ValueError(f"cannot load a Hugging Face text model from {folder}: {e}") from None
        self.model = model.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.tokenizer.truncation_side = "right"  # keep the first tokens
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise ValueError(f"the tokenizer in {folder} has neither a padding nor an end token to pad with")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        cfg = self.model.config
        self.max_length = max_length or _context(self.tokenizer, cfg, folder)
        self.dim = int(getattr(cfg, "hidden_size", None) or cfg.d_model)
        causal_clip = cfg.model_type.startswith("clip")
        self.attention_mask = (not causal_clip) if attention_mask is None else attention_mask
        specials = len(self.tokenizer("")["input_ids"])  # the start/end tokens it adds to every caption
        self.truncation = f"the first {self.max_length - specials} word pieces kept" + (
            f" with the {specials} special tokens" if specials else ""
        )
        self.name = f"hf-{folder.name}-L{self.max_length}-{weights_digest(self.model)[:12]}"

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(ids) for ids in self.tokenizer(captions, verbose=False)["input_ids"]])
        out = self.tokenizer(
            captions, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return out["input_ids"], out["attention_mask"].bool(), lengths

    def forward_tokens(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        kwargs = {"attention_mask": mask.long()} if self.attention_mask else {}
        return self.model(input_ids=ids, **kwargs).last_hidden_state  # (N, L, D)


def _context(tokenizer, config, folder: Path) -> int:
    """The context of a Hugging Face text model: the tokenizer's, else the model's position table's."""
    if 0 < getattr(tokenizer, "model_max_length", 0) < 100_000:  # unset, it is a huge sentinel (1e30)
        return int(tokenizer.model_max_length)
    if getattr(config, "max_position_embeddings", None):
        return int(config.max_position_embeddings)
    raise ValueError(f"{folder}: neither the tokenizer nor the model states a context length; pass max_length")


# --------------------------------------------------------------------------------------------------
# detok's offline encoder
# --------------------------------------------------------------------------------------------------


class DetokTextEncoder(TextEncoder):
    """The text tower of a trained `WordCLIP` (text/offline.py); its tokens are words."""

    def __init__(self, model, name: str):
        self.model = model.eval().requires_grad_(False)
        self.device = next(model.parameters()).device
        self.dim, self.max_length = model.config.width, model.config.max_length
        self.truncation = f"the first {self.max_length} words kept"
        self.name = name

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, mask, lengths, unknown = self.model.tokenize(captions)
        if unknown:
            warnings.warn(
                f"{unknown} words of {len(captions)} captions are not in the text encoder's vocabulary of "
                f"{len(self.model.config.vocab)} words (it knows the words of the captions it was trained on); each "
                "was read as [unk]",
                stacklevel=3,
            )
        return ids, mask, lengths

    def forward_tokens(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.forward_text(ids, mask)  # (N, L, D)


def default_text_encoder_dir(preset: str) -> Path:
    """Where `detok text-encoder train --preset PRESET` trains by default, and where the spec PRESET looks."""
    from detok.eval.features import cache_dir

    return cache_dir() / "text-encoders" / preset


def load_text_encoder(spec: str | Path, device: str | torch.device = "cpu") -> TextEncoder:
    """The text encoder named by `spec`: `hf:FOLDER`, `detok:FOLDER`, a text-encoder preset's name (its cache folder)
    or a folder (its config.json tells which kind)."""
    from detok.checkpoint import load_model_folder
    from detok.registry import list_models

    spec = str(spec)
    kind, _, rest = spec.partition(":") if spec.startswith(("hf:", "detok:")) else ("", "", spec)
    presets = list_models(kind="text-encoder")
    path = default_text_encoder_dir(rest) if not Path(rest).exists() and rest in presets else Path(rest)
    if not (path / "config.json").is_file():
        if rest in presets:
            raise FileNotFoundError(
                f"text encoder {rest} is not trained yet: run `detok text-encoder train --preset {rest}`"
            )
        raise FileNotFoundError(
            f"no text encoder at {rest}: expected a folder with config.json (a Hugging Face text model and its "
            "tokenizer, or a `detok text-encoder train` run)"
        )
    raw = json.loads((path / "config.json").read_text())
    if kind == "hf" or (kind == "" and "model_type" in raw):
        return HFTextEncoder(path, device)
    if raw.get("kind") != "text-encoder":
        raise ValueError(f"{path} holds a {raw.get('kind', 'unknown')} model, not a text encoder")
    if not raw.get("finished", False):
        raise ValueError(f"text encoder {path} is still in training: finish it by rerunning its training command")
    model = load_model_folder(path, device)
    return DetokTextEncoder(model, f"detok-{weights_digest(model)[:12]}")


# --------------------------------------------------------------------------------------------------
# Caption files and cached caption-set embeddings
# --------------------------------------------------------------------------------------------------


def read_captions_file(path: str | Path) -> list[str]:
    """Captions from a text file, one per line (trailing blank lines ignored); an empty file or a blank line between
    captions raises."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption file {path} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"caption file {path} is empty: write one caption per line")
    blank = next((i + 1 for i, line in enumerate(lines) if not line.strip()), None)
    if blank is not None:
        raise ValueError(f"caption file {path}: line {blank} is blank; write one caption per line, none blank")
    return [line.strip() for line in lines]


def caption_embeddings(captions, folder: str | Path, encoder: TextEncoder, batch_size: int = 256) -> torch.Tensor:
    """Token outputs (M, L, D) of every caption of the caption set `captions` (saved in `folder`), computed once per
    encoder and cached as `folder/embeddings/<encoder>-<captions>.safetensors` (float16; read back as float32) with a
    JSON record beside it (encoder, context, width, truncated captions)."""
    base = Path(folder) / "embeddings" / f"{encoder.name}-{captions.digest}"
    path = base.with_suffix(".safetensors")
    if path.is_file():
        return read_weights(path)["tokens"].float()
    encoded = encoder.encode(captions.captions, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".emb-")
    os.close(fd)
    save_file({"tokens": encoded.tokens.half().contiguous(), "lengths": encoded.lengths}, tmp)
    publish(tmp, path)
    record = {"encoder": encoder.name, "captions": len(captions.captions), "max_length": encoder.max_length}
    record.update(dim=encoder.dim, truncated=encoded.truncated, truncation=encoder.truncation)
    write_json(base.with_suffix(".json"), record)
    return encoded.tokens.half().float()  # as the cache gives them back
