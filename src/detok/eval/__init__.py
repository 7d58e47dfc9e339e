"""Evaluation: reconstruction metrics, generation metrics and latent analysis."""
