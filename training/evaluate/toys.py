"""Mode-collapse figures for the 2-D toys, as the PacGAN paper reports them.

Lin et al. 2018 (PacGAN), after Srivastava et al. 2017 (VEEGAN), Table 1:

- a sample is *high quality* when it lies within 3 standard deviations of the centre
  of its nearest mode;
- a mode is *covered* when it is the nearest mode of at least one high-quality sample;
- *reverse KL* is KL(generated || real) between the histogram of high-quality samples
  over modes and the real mixture's weights (uniform), so 0 is perfect and a generator
  stuck on one mode of K scores log K.

Published figures (2,500 samples, the default here; mean over 10 runs, Table 1 of the
PacGAN paper): ring of 8 Gaussians, vanilla GAN 6.3 modes and 98.2% high quality; grid
of 25, 17.3 modes and 94.8%; with packing (PacGAN2..4) in PUBLISHED_PACGAN.

`discriminator_view` measures the other half of the course's account of the game: at
its end D says 0.5 everywhere, on real and generated points alike.
"""

from __future__ import annotations

import numpy as np

HIGH_QUALITY_STDS = 3.0
TOY_EVALUATION_SAMPLES = 2500  # generated points per evaluation, as in the PacGAN/VEEGAN tables
PUBLISHED_GAN = {"ring": {"modes": 6.3, "high_quality": 98.2},
                 "grid": {"modes": 17.3, "high_quality": 94.8}}
# PacGAN paper, Table 1: pack -> (modes, % high quality, reverse KL); pack 1 is the GAN row.
PUBLISHED_PACGAN = {
    "ring": {1: (6.3, 98.2, 0.45), 2: (7.9, 95.6, 0.07), 3: (7.8, 97.7, 0.10), 4: (7.8, 95.9, 0.07)},
    "grid": {1: (17.3, 94.8, 0.70), 2: (23.8, 91.3, 0.13), 3: (24.6, 94.2, 0.06),
             4: (24.8, 93.6, 0.04)},
}


def toy_figures(points: np.ndarray, centres: np.ndarray, std: float) -> dict:
    """Modes covered, % high quality and reverse KL of `points` (N, 2) against a mixture
    of isotropic Gaussians with means `centres` (K, 2) and standard deviation `std`."""
    points = np.asarray(points, dtype=np.float64).reshape(len(points), -1)  # (N, 2)
    if not np.all(np.isfinite(points)):
        # A diverged generator: no sample is anywhere near a mode.
        points = np.nan_to_num(points, nan=np.inf, posinf=np.inf, neginf=-np.inf)
    distances = np.linalg.norm(points[:, None, :] - centres[None, :, :], axis=2)  # (N, K)
    nearest = distances.argmin(axis=1)
    good = distances[np.arange(len(points)), nearest] < HIGH_QUALITY_STDS * std
    counts = np.bincount(nearest[good], minlength=len(centres))  # (K,)
    figures = {
        "modes": int((counts > 0).sum()),
        "num_modes": len(centres),
        "high_quality": 100.0 * float(good.mean()) if len(points) else 0.0,
    }
    if counts.sum():
        share = counts / counts.sum()
        uniform = 1.0 / len(centres)
        kept = share > 0
        figures["reverse_kl"] = float(np.sum(share[kept] * np.log(share[kept] / uniform)))
    else:
        figures["reverse_kl"] = None  # no high-quality sample: undefined
    return figures


def discriminator_view(discriminator, real, fake, probabilities: bool = True) -> dict:
    """How a trained D judges `real` and generated `fake` points (N, 2) (tensors): mean
    D(x) and D(G(z)), and, for the probability-valued losses (`probabilities`: D's
    output is a logit), the mean distance of D from 0.5 over both sets, 0 where the
    game has reached its end. With packing, each set is judged in packs of its own."""
    import torch

    pack = getattr(getattr(discriminator, "config", None), "pack", 1)
    was_training = discriminator.training
    discriminator.eval()
    with torch.no_grad():
        outputs = [discriminator(points[:len(points) - len(points) % pack]).float()
                   for points in (real, fake)]
    discriminator.train(was_training)
    if probabilities:
        outputs = [torch.sigmoid(output) for output in outputs]
    view = {"d_real": float(outputs[0].mean()), "d_fake": float(outputs[1].mean())}
    if probabilities:
        view["d_from_half"] = float(torch.cat(outputs).sub(0.5).abs().mean())
    return view
