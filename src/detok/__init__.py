"""detok: visual tokenizers for generative models — l-DeTok and its peers, trained and compared on one footing."""

import detok.eval.reference  # noqa: F401  (registers the evaluators' presets)
import detok.generators  # noqa: F401  (registers the generator presets)
import detok.teachers.mae  # noqa: F401  (registers the teacher presets)
import detok.text  # noqa: F401  (registers the offline text encoder's presets)
import detok.tokenizers  # noqa: F401  (registers the tokenizer presets)
from detok.registry import create_model, list_models

__version__ = "0.1.0"  # the one source: pyproject.toml reads it, `detok --version` prints it
__all__ = ["create_model", "list_models", "load_generator", "load_tokenizer", "__version__"]


def load_tokenizer(path, device="cpu"):
    """Load a tokenizer from a run directory, any folder holding `config.json` + `model.safetensors`, or a Hub
    repository holding them: `hf:ORG/NAME[@REV]` (through huggingface_hub's cache; `pip install 'detok[hub]'`)."""
    from detok.checkpoint import load_tokenizer as _load

    return _load(path, device=device)


def load_generator(path, device="cpu"):
    """Load a generator from a run directory, any folder holding `config.json` + `model.safetensors`, or a Hub
    repository holding them: `hf:ORG/NAME[@REV]`."""
    from detok.checkpoint import load_generator as _load

    return _load(path, device=device)
