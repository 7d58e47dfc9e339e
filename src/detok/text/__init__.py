"""Text for text-to-image generation: caption sets (made from measured attributes, or your own), text encoders (a
local Hugging Face model, or detok's offline one) and their cached embeddings. Importing this package registers the
offline encoder's presets."""

from detok.text import offline  # noqa: F401
