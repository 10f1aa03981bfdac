"""The statistics of the quality figures, on features already extracted: FD and KID
(by torchmetrics), precision, recall, density and coverage (k-nearest-neighbour balls),
class coverage and its KL, and the nearest-neighbour distance that flags memorisation."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from training.evaluate.features import BATCH

KID_SUBSETS, KID_SUBSET_SIZE = 50, 500
PRDC_K = 5  # neighbours that set each ball's radius: the papers' default
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


def distances(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """(m, n) Euclidean distances, each computed directly rather than through a matrix
    product, so a pair's distance is the same bit for bit in every batch: a point on a
    ball's edge is inside it whether the radius or the pair was computed first."""
    return torch.cdist(rows, columns, compute_mode="donot_use_mm_for_euclid_dist")


def kth_neighbour_distances(points: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) distance from each point to its k-th nearest other point (itself excluded)."""
    radii = [distances(part, points).kthvalue(k + 1, dim=1).values  # its own 0 comes first
             for part in points.split(BATCH * 4)]
    return torch.cat(radii)


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = PRDC_K) -> dict:
    """Precision and recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al.
    2020) of `fake` features (M, d) against `real` ones (N, d). A ball around each point
    reaches its k-th nearest neighbour in its own set:

    - precision: the share of fake points inside at least one real ball (fidelity);
    - recall: the share of real points inside at least one fake ball (variety);
    - density: fake points counted once per real ball they fall in, divided by k M; about
      1 for real against real, above 1 where fakes crowd dense real regions;
    - coverage: the share of real balls holding at least one fake point (variety, without
      recall's trust in the fakes' own, outlier-inflated balls).
    """
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision and recall need more than k = {k} samples per set")
    real, fake = real.double(), fake.double()
    real_radii, fake_radii = kth_neighbour_distances(real, k), kth_neighbour_distances(fake, k)
    in_real_balls = torch.zeros(len(fake), dtype=torch.long)  # per fake: real balls around it
    real_reached = torch.zeros(len(real), dtype=torch.bool)  # per real: inside a fake ball
    nearest_fake = torch.full((len(real),), torch.inf, dtype=torch.float64)
    start = 0
    for part in fake.split(BATCH * 4):  # (m, N) distances at a time: 10,000 points fit
        between = distances(part, real)
        in_real_balls[start:start + len(part)] = (between <= real_radii).sum(1)
        real_reached |= (between <= fake_radii[start:start + len(part), None]).any(0)
        nearest_fake = torch.minimum(nearest_fake, between.min(0).values)
        start += len(part)
    return {
        "precision": float((in_real_balls > 0).double().mean()),
        "recall": float(real_reached.double().mean()),
        "density": float(in_real_balls.sum()) / (k * len(fake)),
        "prdc_coverage": float((nearest_fake <= real_radii).double().mean()),
    }
