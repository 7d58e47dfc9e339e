"""Tokenizer families behind one interface (`base.Tokenizer`). Importing this package registers their presets."""

from detok.tokenizers import aligntok, cnn, detok, maetok, onedim, vq  # noqa: F401
