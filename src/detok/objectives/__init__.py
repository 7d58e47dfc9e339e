"""Training objectives and samplers of the generators, kept apart from the backbones that they drive.

`diffusion` (DDPM, Ho et al. 2020 / Nichol & Dhariwal 2021), `flow` (linear-interpolant flow matching,
SiT / rectified flow), `diffloss` (MAR's per-token diffusion head) and `guidance` (classifier-free guidance).
"""
