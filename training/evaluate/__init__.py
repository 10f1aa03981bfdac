"""Offline quality metrics for generators, each figure next to its real-vs-real floor.

Inception features say little about 28x28 digits, so, as MNIST GAN papers do, the
feature space is the penultimate layer of a small CNN that this project trains on the
dataset's own train split (seeded, cached on disk, its held-out accuracy reported).
One such instrument can be fooled (the bundled generator: FD ratio 1.3 in it, 2.0 in
another network trained on the same digits), so there are two, independent: a
strided CNN and a small ResNet, with their own seeds, optimisers and augmentation
(`features.FEATURE_NETWORKS`). Figures in the second carry a `2` (`fd2`, `kid2`,
`precision2`, ...); the first network's keys mean what they always meant. Unlabelled
data (a flat `folder`, CelebA) has no labels to train either: its one feature space is
the first network's CNN trained without labels, by contrastive learning on the train
split (`encoder.py`), or with too few images the same CNN with seeded random weights,
which the report then names as the fallback. In those spaces:

- FD (Fréchet distance) and KID (kernel distance), by torchmetrics, between generated
  images and real images held out from training. Both depend on the sample count, so
  each comes with its *floor*: the same distance between two disjoint real sets of the
  same size (train images vs the same held-out images). `fd_ratio = fd / fd_floor` then
  means the same across runs: 1 is as close as real data gets. `fd_ratio_mean`, the
  mean of the two networks' ratios, is what `best.pt` is chosen by (`selection_score`).
- prdc: precision and recall (Kynkäänniemi et al. 2019), density and coverage (Naeem
  et al. 2020), from balls reaching each point's k-th nearest neighbour (k = 5,
  `prdc_k`), with the sample counts (`prdc_samples`) and the same real-vs-real floors.
  Precision and density say how real the samples look, recall and coverage how much
  of the real variety they reach: what FD alone cannot separate.
- coverage (labelled data): the histogram of the classifier's predicted classes over
  generated samples, the classes covered (a class is covered when it gets at least
  half its share among real images: more than the classifier's errors give it),
  KL(generated || real) of the two histograms (as in Metz et al. 2017; log 10 = 2.30
  for a generator stuck on one digit), and the mean classifier confidence.
- nn: median nearest-neighbour distance (RMS per pixel, at most 64x64) from generated
  samples to the training images, next to the same for held-out real images; a ratio
  well below 1 flags memorisation.
- modes (2-D toys): the PacGAN figures, see `training.evaluate.toys`; FD, KID and prdc
  are then computed on the points themselves.
- inception: FID/KID with the standard Inception weights, from a local file only.
- truncation (on request): FD in both networks, precision and recall at several
  truncation thresholds, and a suggested one; see `training.evaluate.truncation`.

Held-out images: the dataset's test split (mnist5k: the last 100 of each digit, 1,000
images, never trained on); for `folder`, a fixed 10% of the images, held out from
training too (training/folder.py).

The modules, in the order a figure is made:

    sources.py    the generator under test (`Source`: card + generate), opened one way
    features.py   the real data and the feature spaces (two classifiers, Inception)
    encoder.py    the feature space of unlabelled data (a contrastive encoder)
    metrics.py    FD, KID, precision/recall/density/coverage, class coverage, NN distance
    toys.py       the PacGAN mode figures of the 2-D toys
    evaluator.py  `Evaluator` (real side prepared once), `PeriodicEvaluator`, `evaluate`,
                  `selection_score`
    truncation.py the truncation curve, its suggestion, its JSON and PNG
    cli.py        the `dcgan evaluate` command and its table
    errors.py     `EvaluationError`

The names below are imported on first use, so `dcgan --help` does not load torch.
"""

from __future__ import annotations

import importlib

__all__ = ["METRICS", "SELECTION_SEEDS", "EvaluationError", "Evaluator", "PeriodicEvaluator",
           "Source", "evaluate",
           "open_for_evaluation", "selection_score", "truncation_curve"]

_HOME = {
    "METRICS": "evaluator", "SELECTION_SEEDS": "evaluator", "Evaluator": "evaluator",
    "PeriodicEvaluator": "evaluator",
    "evaluate": "evaluator", "EvaluationError": "errors", "Source": "sources",
    "open_for_evaluation": "sources", "selection_score": "evaluator",
    "truncation_curve": "truncation",
}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
