"""Offline quality metrics for generators, each figure next to its real-vs-real floor.

Inception features say little about 28x28 digits, so, as MNIST GAN papers do, the
feature space is the penultimate layer of a small CNN that this project trains on the
dataset's own train split (seeded, cached on disk, its held-out accuracy reported).
In that space, with torchmetrics doing the statistics:

- FD (Fréchet distance) and KID (kernel distance) between generated images and real
  images held out from training. Both depend on the sample count, so each comes with
  its *floor*: the same distance between two disjoint real sets of the same size
  (train images vs the same held-out images). `fd_ratio = fd / fd_floor` then means
  the same across runs: 1 is as close as real data gets.
- coverage (labelled data): the histogram of the classifier's predicted classes over
  generated samples, the classes covered (a class is covered when it gets at least
  half its share among real images: more than the classifier's errors give it),
  KL(generated || real) of the two histograms (as in Metz et al. 2017; log 10 = 2.30
  for a generator stuck on one digit), and the mean classifier confidence.
- nn: median nearest-neighbour distance (RMS per pixel, at most 64x64) from generated
  samples to the training images, next to the same for held-out real images; a ratio
  well below 1 flags memorisation.
- modes (2-D toys): the PacGAN figures, see `training.evaluate.toys`; FD and KID are
  then computed on the points themselves.
- inception: FID/KID with the standard Inception weights, from a local file only.

Held-out images: the dataset's test split (mnist5k: the last 100 of each digit, 1,000
images, never trained on); for `folder`, a fixed 10% of the images.

The modules, in the order a figure is made:

    sources.py    the generator under test (`Source`: card + generate), opened one way
    features.py   the real data and the feature space (classifier, Inception)
    metrics.py    FD, KID, class coverage, nearest-neighbour distance
    toys.py       the PacGAN mode figures of the 2-D toys
    evaluator.py  `Evaluator` (real side prepared once), `PeriodicEvaluator`, `evaluate`
    cli.py        the `dcgan evaluate` command and its table
    errors.py     `EvaluationError`

The names below are imported on first use, so `dcgan --help` does not load torch.
"""

from __future__ import annotations

import importlib

__all__ = ["METRICS", "EvaluationError", "Evaluator", "PeriodicEvaluator", "Source", "evaluate",
           "open_for_evaluation", "selection_score", "truncation_curve"]

_HOME = {
    "METRICS": "evaluator", "Evaluator": "evaluator", "PeriodicEvaluator": "evaluator",
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
