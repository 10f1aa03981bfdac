"""GAN objectives, all on raw discriminator logits (safe under autocast).

- minimax: the original saturating game of Goodfellow et al. 2014,
  G minimises log(1 - D(G(z))).
- nonsaturating: G maximises log D(G(z)) instead (same fixed point, strong
  gradients early on, when D rejects fakes easily). The default.
- wgan: Wasserstein critic (Arjovsky et al. 2017) with weight clipping.
- wgan-gp: Wasserstein critic with a gradient penalty (Gulrajani et al. 2017).
- hinge: the hinge loss of SAGAN / spectral-norm GANs.

Regularisers for D: the WGAN-GP gradient penalty, and the R1 penalty (Mescheder et
al. 2018), gamma/2 E||grad D(x)||^2 on real inputs only, which any loss can add.

The loss owns the GAN logic; the loop only schedules calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.config import LOSSES


def discriminator_loss(
    loss: str, real_logits: torch.Tensor, fake_logits: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """The discriminator's (critic's) loss to minimise."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    if loss in ("minimax", "nonsaturating"):
        # -log D(x) - log(1 - D(G(z))); one-sided smoothing lowers only the real target
        real_target = torch.full_like(real_logits, 1.0 - label_smoothing)
        return F.binary_cross_entropy_with_logits(
            real_logits, real_target
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    if loss in ("wgan", "wgan-gp"):
        return fake_logits.mean() - real_logits.mean()
    if loss == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")


def generator_loss(loss: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's loss to minimise."""
    fake_logits = fake_logits.float()
    if loss == "minimax":
        # log(1 - D(G(z))) = -softplus(logit): minimising it saturates when D wins
        return -F.softplus(fake_logits).mean()
    if loss == "nonsaturating":
        # -log D(G(z)) = softplus(-logit)
        return F.softplus(-fake_logits).mean()
    if loss in ("wgan", "wgan-gp", "hinge"):
        return -fake_logits.mean()
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")


def gradient_penalty(
    discriminator: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """E[(||grad D(x_hat)||_2 - 1)^2] on random points between real and fake samples.

    With packing, the mixing weight is shared by the samples of one pack, so the
    penalty applies per judged (packed) input.
    """
    pack = getattr(getattr(discriminator, "config", None), "pack", 1)
    n = real.shape[0]
    shape = (n // pack, 1) + (1,) * (real.dim() - 1)
    alpha = torch.rand(shape, device=real.device).repeat_interleave(pack, 0)[:n]
    alpha = alpha.reshape((n,) + (1,) * (real.dim() - 1))
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    logits = discriminator(mixed, labels)
    (grads,) = torch.autograd.grad(logits.float().sum(), mixed, create_graph=True)
    grads = grads.reshape(n // pack, -1)  # one gradient vector per judged input
    return ((grads.norm(2, dim=1) - 1.0) ** 2).mean()


def r1_penalty(real_logits: torch.Tensor, real_inputs: torch.Tensor) -> torch.Tensor:
    """E||grad_x D(x)||^2 over the real inputs (N, ...) that gave `real_logits`; the
    inputs must require grad. Zero-centred: D is pushed to be flat on the data, so it
    cannot carve sharp peaks around the training images it has memorised."""
    (grads,) = torch.autograd.grad(real_logits.float().sum(), real_inputs, create_graph=True)
    return grads.pow(2).reshape(grads.shape[0], -1).sum(dim=1).mean()


@torch.no_grad()
def clip_weights(discriminator: nn.Module, bound: float) -> None:
    """WGAN's Lipschitz constraint by clipping every critic parameter to [-bound, bound]."""
    for param in discriminator.parameters():
        param.clamp_(-bound, bound)
