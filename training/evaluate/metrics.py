"""The statistics of the quality figures, on features already extracted: FD and KID
(by torchmetrics), class coverage and its KL, and the nearest-neighbour distance that
flags memorisation."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from training.evaluate.features import BATCH

KID_SUBSETS, KID_SUBSET_SIZE = 50, 500
COVERED_SHARE = 0.5  # of a class's real share; classifier errors alone stay below it


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FD between Gaussians fitted to two feature sets (N, d), by torchmetrics; the
    features are extracted beforehand, so its extractor is a Flatten."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=nn.Flatten(), input_img_size=(real.shape[1],),
                                      normalize=True)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return max(float(metric.compute()), 0.0)  # rounding can dip below 0 for equal sets


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, gamma: float) -> tuple[float, float]:
    """(mean, std) of KID over KID_SUBSETS random subsets, seeded, by torchmetrics, with
    the cubic kernel (gamma x.y + 1)^3 of Binkowski et al. 2018."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(KID_SUBSET_SIZE, len(real), len(fake))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "will save all extracted features": a few thousand
        metric = KernelInceptionDistance(feature=nn.Flatten(), subsets=KID_SUBSETS,
                                         subset_size=size, gamma=gamma)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the subsets come from torch's global generator
        mean, std = metric.compute()
    return float(mean), float(std)


def kernel_gamma(reference: torch.Tensor) -> float:
    """1 / (d * mean squared feature of the real reference): the kernel's usual 1/d, made
    blind to the scale of the classifier's features, so KID reads like Inception KID."""
    return float(1.0 / (reference.shape[1] * reference.pow(2).mean().clamp_min(1e-12)))


def coverage(probs: torch.Tensor, real_probs: torch.Tensor) -> dict:
    """Class coverage of samples whose predicted-class probabilities are `probs` (N, K),
    against real images' `real_probs`: both histograms are of predicted classes."""
    classes = real_probs.shape[1]
    counts = torch.bincount(probs.argmax(1), minlength=classes).double()
    real_counts = torch.bincount(real_probs.argmax(1), minlength=classes).double()
    share = counts / counts.sum()
    real_share = (real_counts + 1) / (real_counts.sum() + classes)  # add-one: KL stays finite
    covered = (counts > 0) & (share >= COVERED_SHARE * real_counts / real_counts.sum())
    kept = share > 0
    return {
        "classes_covered": int(covered.sum()), "num_classes": classes,
        "class_kl": float((share[kept] * (share[kept] / real_share[kept]).log()).sum()),
        "confidence": float(probs.max(1).values.mean()),
        "class_histogram": [int(c) for c in counts],
    }


def median_nn_distance(samples: torch.Tensor, train: torch.Tensor) -> float:
    """Median over samples of the distance to the nearest training sample, as RMS per
    pixel in [-1, 1] units (L2 / sqrt(pixels))."""
    flat_train = train.reshape(len(train), -1).float()
    nearest = [torch.cdist(part.reshape(len(part), -1).float(), flat_train).min(1).values
               for part in samples.split(BATCH)]
    return float(torch.cat(nearest).median()) / flat_train.shape[1] ** 0.5
