"""Class means for latent arithmetic: the deepest of the surest samples of each class."""

from __future__ import annotations

import numpy as np

from models.latent import latents_from_seeds
from training.directions import deepest_means

NZ, K = 20, 4


def cones(latents: np.ndarray) -> np.ndarray:
    """A made-up classifier: the class is the largest of the first K coordinates, and it
    is equally sure of every sample, so only depth can tell the samples apart."""
    probs = np.full((len(latents), K), 0.01, np.float32)
    probs[np.arange(len(latents)), latents[:, :K].argmax(axis=1)] = 0.97
    return probs


def test_the_deepest_samples_point_further_into_their_class_than_any_sure_ones():
    latents = latents_from_seeds(range(4000), NZ)
    deep, counts = deepest_means(latents, cones, per_class=50, candidates=1000, turns=8)
    sure, _ = deepest_means(latents, cones, per_class=50, candidates=1000, turns=0)
    assert counts == [50] * K
    for k in range(K):
        assert deep[k].argmax() == k  # each mean lies in its own class
        # deeper: a larger lead of its own coordinate over the others'
        assert deep[k, k] - np.delete(deep[k, :K], k).max() > 1.3 * (
            sure[k, k] - np.delete(sure[k, :K], k).max())
    # arithmetic with the deep means moves more samples of class 0 into each other class
    start = latents[cones(latents).argmax(axis=1) == 0][:200]
    for k in range(1, K):
        landed = [(cones(start + m[k] - m[0]).argmax(axis=1) == k).mean() for m in (deep, sure)]
        assert landed[0] > landed[1]


def test_without_turns_the_surest_are_averaged_and_the_result_is_reproducible():
    latents = latents_from_seeds(range(500), NZ)

    def sure_of_first(latents):  # surer of a sample the larger its first coordinate
        probs = np.full((len(latents), K), 0.0, np.float32)
        probs[:, 0] = 1 / (1 + np.exp(-latents[:, 0]))
        probs[:, 1] = 1 - probs[:, 0]
        return probs

    means, counts = deepest_means(latents, sure_of_first, per_class=10, candidates=10, turns=0)
    top = np.argsort(-latents[:, 0])[:10]
    np.testing.assert_allclose(means[0], latents[top].mean(axis=0), rtol=1e-6)
    assert counts == [10, 10, 0, 0] and not means[2:].any()
    again, _ = deepest_means(latents, sure_of_first, per_class=10, candidates=10, turns=3)
    np.testing.assert_array_equal(again, deepest_means(latents, sure_of_first, per_class=10,
                                                       candidates=10, turns=3)[0])
