"""Generators that consume tokenizer latents. Importing this package registers their presets."""

from detok.generators import ar, discrete_ar, dit, lightningdit, mar, t2i  # noqa: F401
