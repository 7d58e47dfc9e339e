"""Frozen teachers that give patch features of images (semantic distillation, MAETok's auxiliary targets)."""
