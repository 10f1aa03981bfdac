"""Resolving a config: recipes (a loss with its paper's settings), the explicit options
that win over them, and the schedule of the 2-D toys."""

from __future__ import annotations

import re

import pytest

from training.config import (
    IMAGE_STEPS,
    RECIPES,
    TOY_STEPS,
    TrainConfig,
    TrainingError,
    resolve,
    resume_config,
)


def resolved(**options) -> TrainConfig:
    return resolve(TrainConfig(device="cpu", run_dir="unused", **options))


def test_without_a_recipe_the_defaults_are_the_dcgan_papers():
    config = resolved()
    assert config.recipe == "dcgan" and config.loss == "nonsaturating"
    assert (config.optimizer, config.lr_g, config.lr_d, config.beta1, config.beta2) == (
        "adam", 2e-4, 2e-4, 0.5, 0.999)
    assert config.d_steps == 1 and config.steps == IMAGE_STEPS and config.lr_decay == "none"


@pytest.mark.parametrize("recipe, expected", [
    ("gan", dict(loss="minimax", optimizer="adam", lr_g=1e-4, beta1=0.8, d_steps=1)),
    ("ns-gan", dict(loss="nonsaturating", optimizer="adam", lr_g=1e-4, beta1=0.8, d_steps=1)),
    ("wgan", dict(loss="wgan", optimizer="rmsprop", lr_g=5e-5, lr_d=5e-5, d_steps=5, clip=0.01)),
    ("wgan-gp", dict(loss="wgan-gp", lr_g=1e-4, beta1=0.0, beta2=0.9, d_steps=5, gp_weight=10.0)),
    ("hinge", dict(loss="hinge", lr_g=1e-4, lr_d=4e-4, beta1=0.0, beta2=0.9, d_steps=1)),
])
def test_a_recipe_sets_its_papers_loss_and_optimiser(recipe, expected):
    config = resolved(recipe=recipe)
    assert {name: getattr(config, name) for name in expected} == expected
    assert config.recipe == recipe


def test_explicit_options_win_over_the_recipe():
    config = resolved(recipe="wgan", lr_d=1e-4, d_steps=2, loss="hinge")
    assert (config.lr_d, config.d_steps, config.loss) == (1e-4, 2, "hinge")
    assert (config.optimizer, config.lr_g, config.clip) == ("rmsprop", 5e-5, 0.01)  # the recipe's


def test_toys_train_longer_with_decaying_rates_and_wgan_gp_takes_its_toy_penalty():
    assert resolved(dataset="ring").steps == TOY_STEPS["ring"] == 20_000
    assert resolved(dataset="grid").steps == TOY_STEPS["grid"] > TOY_STEPS["ring"]  # 25 modes
    toy = resolved(dataset="ring", recipe="wgan-gp")
    assert toy.steps == TOY_STEPS["ring"] // 5 and toy.lr_decay == "linear"  # 5 critic steps per G step
    assert (toy.gp_weight, toy.beta1, toy.beta2) == (0.1, 0.5, 0.9)  # the reference toy script's
    images = resolved(dataset="fake", recipe="wgan-gp")
    assert images.steps == IMAGE_STEPS and images.lr_decay == "none" and images.gp_weight == 10.0
    chosen = resolved(dataset="grid", recipe="wgan-gp", gp_weight=1.0, steps=5, lr_decay="none")
    assert (chosen.gp_weight, chosen.steps, chosen.lr_decay) == (1.0, 5, "none")


@pytest.mark.parametrize("options, field", [
    (dict(recipe="sgan"), "recipe must be one of " + ", ".join(RECIPES)),
    (dict(optimizer="sgd"), "optimizer must be one of adam, rmsprop"),
    (dict(lr_decay="cosine"), "lr-decay must be one of none, linear"),
    (dict(beta1=1.0), "beta1 must be in [0, 1)"),
    (dict(gp_weight=0.0), "gp-weight must be above 0"),
    (dict(top_k=0.0), "top-k must be in (0, 1]"),
    (dict(top_k=1.5), "top-k must be in (0, 1]"),
])
def test_bad_recipe_options_name_the_field(options, field):
    with pytest.raises(ValueError, match=re.escape(field)):
        resolved(**options)


def test_a_resume_keeps_its_recipe_and_old_runs_their_constant_rates():
    saved = resolved(dataset="ring", recipe="wgan").to_dict()
    with pytest.raises(TrainingError, match="--recipe hinge"):
        resume_config(saved, {"recipe": "hinge"})
    assert resume_config(saved, {"recipe": "wgan", "steps": 9}).steps == 9
    # a run saved before recipes existed: Adam, constant rates, whatever its data
    old = {k: v for k, v in saved.items() if k not in ("recipe", "optimizer", "lr_decay")}
    again = resolve(resume_config(old, {}))
    assert (again.optimizer, again.lr_decay, again.loss) == ("adam", "none", "wgan")
