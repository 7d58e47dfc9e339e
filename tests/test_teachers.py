"""Teachers: MaskFeat's HOG against hand-computed values."""

import pytest
import torch

from detok.teachers.hog import HOGTeacher, gaussian_window


def test_hog_geometry_follows_image_and_patch_size():
    teacher = HOGTeacher(patch_size=16)
    feats = teacher(torch.rand(2, 3, 32, 48) * 2 - 1)
    assert feats.shape == (2, 2 * 3, 108) and teacher.feature_dim(3) == 108  # 2×2 cells × 3 channels × 9 bins
    assert HOGTeacher(patch_size=4, cell_size=2)(torch.zeros(1, 1, 8, 8)).shape == (1, 4, 2 * 2 * 1 * 9)
    with pytest.raises(ValueError, match="tile"):
        HOGTeacher(patch_size=6, cell_size=4)


def test_a_vertical_edge_votes_in_one_bin_with_sobel_magnitude():
    """x = 0 left of column 4, 1 from column 4 on (one channel, 8×8, patch 8, cell 4). The Sobel x-response at columns
    3 and 4 is (1 + 2 + 1) · (0 − 1) = −4, the y-response 0; atan2(−4, 0) = −π/2 → bin ⌊−4.5⌋ mod 9 = 4 (the bin of
    +π/2 as well: unsigned). Every cell then holds one non-zero bin, which ℓ2-normalisation makes 1."""
    x = torch.zeros(1, 1, 8, 8)
    x[..., 4:] = 1.0
    teacher = HOGTeacher(patch_size=8, cell_size=4)
    cells = teacher.histograms(x)  # (1, 1, 9, 2, 2)
    assert torch.allclose(cells[0, 0, 4], torch.ones(2, 2)) and cells[0, 0].sum() == pytest.approx(4.0)
    assert torch.allclose(teacher.histograms(1 - x), cells)  # the opposite edge: +π/2, the same unsigned bin
    w = gaussian_window(8, 4.0)
    assert w.sum().item() == pytest.approx(1.0) and w[3, 3] == w.max() and torch.equal(w, w.t())


def test_a_horizontal_edge_votes_in_another_bin():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 4:, :] = 1.0  # y-gradient only: atan2(0, −4) = π → bin ⌊9⌋ mod 9 = 0
    cells = HOGTeacher(patch_size=8, cell_size=4).histograms(x)
    assert torch.allclose(cells[0, 0, 0], torch.ones(2, 2)) and cells[0, 0, 1:].abs().sum() == 0
