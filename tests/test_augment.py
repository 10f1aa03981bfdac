"""DiffAugment of the discriminator's inputs: what each operation does, and that the
training loop applies it to real and generated images in every step D sees them."""

from __future__ import annotations

import pytest
import torch

from training import loop
from training.augment import augment, cutout, parse_augment, translation
from training.config import TrainConfig


def test_parse_augment():
    assert parse_augment("translation, cutout") == ("translation", "cutout")
    assert parse_augment("") == parse_augment("none") == ()
    with pytest.raises(ValueError, match="augment must be .*translation, cutout.*'flip'"):
        parse_augment("translation,flip")


def test_config_refuses_an_unknown_augmentation():
    with pytest.raises(ValueError, match="augment"):
        TrainConfig(augment="colour").validate()


def test_translation_moves_content_by_at_most_an_eighth_and_fills_with_background():
    torch.manual_seed(0)
    images = torch.full((64, 1, 32, 32), -1.0)
    images[:, :, 16, 16] = 1.0  # one lit pixel in the middle
    moved = translation(images)
    assert moved.shape == images.shape
    positions = [(m[0] == 1.0).nonzero()[0].tolist() for m in moved]
    assert all(len((m[0] == 1.0).nonzero()) == 1 for m in moved)  # nothing lost, nothing added
    assert all(abs(y - 16) <= 4 and abs(x - 16) <= 4 for y, x in positions)
    assert len(set(map(tuple, positions))) > 10  # each image gets its own shift
    # a shifted-in border is background (-1), not a new colour
    assert set(torch.unique(translation(torch.full((8, 1, 16, 16), -1.0))).tolist()) == {-1.0}


def test_cutout_zeroes_one_square_of_up_to_half_the_side():
    torch.manual_seed(0)
    out = cutout(torch.ones(32, 3, 16, 16))
    zeros = (out == 0).all(dim=1)  # the same pixels in every channel
    counts = zeros.flatten(1).sum(1)
    assert ((counts >= 16) & (counts <= 64)).all()  # an 8x8 square, clipped at the borders
    assert ((out == 0) | (out == 1)).all()


def test_gradients_pass_and_points_pass_untouched():
    images = torch.randn(4, 1, 16, 16, requires_grad=True)
    augment(images, ("translation", "cutout")).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    points = torch.randn(8, 2)
    assert augment(points, ("translation",)) is points


def test_training_augments_real_and_fake_in_both_steps(tmp_path, make_tiny_config, monkeypatch):
    seen = []

    def spy(images, names):
        seen.append((names, images.requires_grad))
        return augment(images, names)

    monkeypatch.setattr(loop, "augment", spy)
    loop.train(make_tiny_config(tmp_path, steps=2, augment="translation,cutout", log_every=2),
               progress=False)
    names = ("translation", "cutout")
    # per step: real and detached fake for D, then the fake with its graph for G
    assert seen == [(names, False), (names, False), (names, True)] * 2
