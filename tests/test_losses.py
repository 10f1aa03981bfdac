"""GAN objectives on logits: values against their formulas, gradients, penalty, clipping."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from training.config import LOSSES
from training.losses import (
    clip_weights,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    r1_penalty,
)


def logits(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize("loss", ("minimax", "nonsaturating"))
def test_bce_discriminator_loss_at_known_logits(loss):
    # D(x) = D(G(z)) = 1/2: -log(1/2) - log(1/2) = 2 log 2
    assert float(discriminator_loss(loss, logits(0, 0), logits(0, 0))) == pytest.approx(2 * math.log(2))
    # -log sigmoid(r) - log(1 - sigmoid(f)) = softplus(-r) + softplus(f)
    r, f = 1.5, -0.5
    assert float(discriminator_loss(loss, logits(r), logits(f))) == pytest.approx(softplus(-r) + softplus(f))


def test_one_sided_label_smoothing_lowers_only_the_real_target():
    r, f, s = 2.0, 1.0, 0.1
    sig = 1 / (1 + math.exp(-r))
    expected = -(1 - s) * math.log(sig) - s * math.log(1 - sig) + softplus(f)
    got = discriminator_loss("nonsaturating", logits(r), logits(f), label_smoothing=s)
    assert float(got) == pytest.approx(expected)
    # the fake term is the same as without smoothing
    no_real = discriminator_loss("nonsaturating", logits(50.0), logits(f), label_smoothing=0.0)
    assert float(no_real) == pytest.approx(softplus(f), rel=1e-6)


def test_generator_losses_at_known_logits():
    x = 0.7
    # minimax: G minimises log(1 - D(G(z))) = -softplus(x)
    assert float(generator_loss("minimax", logits(x))) == pytest.approx(-softplus(x))
    assert float(generator_loss("minimax", logits(0))) == pytest.approx(-math.log(2))
    # non-saturating: G minimises -log D(G(z)) = softplus(-x)
    assert float(generator_loss("nonsaturating", logits(x))) == pytest.approx(softplus(-x))
    assert float(generator_loss("nonsaturating", logits(0))) == pytest.approx(math.log(2))
    for loss in ("wgan", "wgan-gp", "hinge"):
        assert float(generator_loss(loss, logits(1.0, 3.0))) == pytest.approx(-2.0)


def generator_gradient(loss: str, logit: float) -> float:
    fake = logits(logit).requires_grad_(True)
    generator_loss(loss, fake).backward()
    return float(fake.grad[0])


def test_nonsaturating_gradient_is_strong_where_minimax_saturates():
    """The point of the non-saturating loss: when D confidently rejects fakes (logit -10),
    minimax gives G almost no gradient, non-saturating almost the full one."""
    minimax, nonsaturating = generator_gradient("minimax", -10.0), generator_gradient("nonsaturating", -10.0)
    # both push the fake logit up (a descent step increases it)
    assert minimax < 0 and nonsaturating < 0
    assert abs(minimax) == pytest.approx(1 / (1 + math.exp(10)), rel=1e-6)  # sigmoid(-10)
    assert abs(nonsaturating) == pytest.approx(1 / (1 + math.exp(-10)), rel=1e-6)  # ~1
    assert abs(nonsaturating) > 1000 * abs(minimax)
    # once D is fooled, the roles swap: minimax is the strong one
    assert abs(generator_gradient("minimax", 10.0)) > 1000 * abs(generator_gradient("nonsaturating", 10.0))


@pytest.mark.parametrize("loss", ("wgan", "wgan-gp"))
def test_wasserstein_critic_loss_sign(loss):
    # the critic minimises E[D(fake)] - E[D(real)]: scoring reals higher is lower loss
    assert float(discriminator_loss(loss, logits(3.0, 1.0), logits(-1.0, 0.0))) == pytest.approx(-0.5 - 2.0)
    good = discriminator_loss(loss, logits(5.0), logits(-5.0))
    bad = discriminator_loss(loss, logits(-5.0), logits(5.0))
    assert good < 0 < bad


def test_hinge_discriminator_loss():
    # relu(1 - r) + relu(1 + f): zero once reals score >= 1 and fakes <= -1
    assert float(discriminator_loss("hinge", logits(2.0, 1.0), logits(-1.0, -3.0))) == 0.0
    assert float(discriminator_loss("hinge", logits(0.0), logits(0.0))) == pytest.approx(2.0)
    assert float(discriminator_loss("hinge", logits(0.5), logits(-2.0))) == pytest.approx(0.5)
    assert float(discriminator_loss("hinge", logits(-1.0), logits(1.0))) == pytest.approx(4.0)


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="loss must be one of minimax, nonsaturating, wgan, wgan-gp, hinge, got 'lsgan'"):
        discriminator_loss("lsgan", logits(0), logits(0))
    with pytest.raises(ValueError, match="got 'lsgan'"):
        generator_loss("lsgan", logits(0))


def test_losses_accept_half_precision_logits():
    for loss in LOSSES:
        value = discriminator_loss(loss, logits(0.3).half(), logits(-0.2).bfloat16())
        assert value.dtype == torch.float32 and torch.isfinite(value)


class LinearCritic(nn.Module):
    """D(x) = w . flatten(pack of x): its gradient is w everywhere."""

    def __init__(self, weight: torch.Tensor, pack: int = 1):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.config = SimpleNamespace(pack=pack)

    def forward(self, images, labels=None):
        return images.reshape(images.shape[0] // self.config.pack, -1) @ self.weight


def test_gradient_penalty_is_zero_for_a_unit_gradient_critic():
    torch.manual_seed(0)
    real, fake = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    weight = torch.randn(16)
    critic = LinearCritic(weight / weight.norm())
    assert float(gradient_penalty(critic, real, fake).detach()) == pytest.approx(0.0, abs=1e-10)
    # twice the slope: (2 - 1)^2 = 1 at every point
    critic = LinearCritic(2 * weight / weight.norm())
    penalty = gradient_penalty(critic, real, fake)
    assert float(penalty.detach()) == pytest.approx(1.0, rel=1e-5)
    penalty.backward()  # the penalty trains the critic: it has a gradient in the weights
    assert critic.weight.grad is not None and critic.weight.grad.norm() > 0


def test_gradient_penalty_judges_packs_as_one_input():
    torch.manual_seed(0)
    real, fake = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    weight = torch.randn(2 * 16)
    critic = LinearCritic(weight / weight.norm(), pack=2)  # unit norm over the pack
    assert float(gradient_penalty(critic, real, fake).detach()) == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_of_a_nonlinear_critic_is_positive():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1), nn.Flatten(0))
    critic.forward = lambda images, labels=None, _f=critic.forward: _f(images)
    penalty = gradient_penalty(critic, torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4))
    assert float(penalty.detach()) > 0.01


def test_r1_penalty_is_the_squared_gradient_norm_at_real_inputs():
    torch.manual_seed(0)
    weight = torch.randn(16)
    critic = LinearCritic(weight)
    real = torch.randn(5, 1, 4, 4).requires_grad_(True)
    penalty = r1_penalty(critic(real), real)
    assert float(penalty.detach()) == pytest.approx(float(weight.pow(2).sum()), rel=1e-5)
    penalty.backward()  # the penalty trains D: d||w||^2/dw = 2w
    torch.testing.assert_close(critic.weight.grad, 2 * weight)
    # zero where D is flat: a constant critic
    flat = real.sum(dim=(1, 2, 3)) * 0.0
    assert float(r1_penalty(flat, real).detach()) == 0.0


def test_clip_weights_bounds_every_parameter():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    with torch.no_grad():
        for param in critic.parameters():
            param.normal_(0, 1)
    small = critic[0].weight.detach().abs() <= 0.01
    before = critic[0].weight.detach().clone()
    clip_weights(critic, 0.01)
    for param in critic.parameters():
        assert param.abs().max() <= 0.01
    assert torch.equal(critic[0].weight[small], before[small])  # inside values untouched
    assert (critic[0].weight.abs() == 0.01).any()  # outside values sit on the bound
