"""The training loop as a user sees it: exact resumes, the run directory, every loss,
the toy MLP, conditioning, failure warnings and a two-process run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import training.loop as loop
from models.card import ModelCard
from training.checkpoint import load_checkpoint, load_torch_generator
from training.config import LOSSES
from training.loop import TrainingError, train
from training.run import failure_warnings

REPO = Path(__file__).resolve().parents[1]
N = 6  # steps before the simulated stop; the whole run is 2N
METRICS = {"step", "d_loss", "g_loss", "d_real", "d_fake", "grad_norm_g", "grad_norm_d",
           "steps_per_s", "images_per_s", "elapsed_s", "warnings"}


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_identical(a, b, where: str = "state") -> None:
    """Bit-identical nested state (dicts, lists, tensors, numbers)."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    else:
        assert a == b, where


# --- resuming is exact --------------------------------------------------------------------


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, make_tiny_config) -> Path:
    """2N steps in one go: the reference for the resume test and the run-dir tests."""
    config = make_tiny_config(tmp_path_factory.mktemp("whole") / "run", steps=2 * N, log_every=3)
    return train(config, progress=False)


@pytest.mark.parametrize("variant", [{}, {"d_steps": 2, "loss": "wgan-gp", "conditional": True,
                                      "augment": "translation,cutout"},
                                     {"d_norm": "spectral", "r1": 1.0},
                                     {"latent_classes": True, "conditioning_start": 2,
                                      "conditioning_steps": 4, "r1": 1.0},
                                     {"dataset": "ring", "nz": None, "mlp_hidden": 16,
                                      "recipe": "wgan", "lr_decay": "none"}],
                         ids=["default", "d_steps2-wgan_gp-conditional-augment", "spectral-r1",
                              "latent_classes-fade_in-r1", "ring-wgan_rmsprop"])
def test_stop_and_resume_is_bit_identical_to_one_run(variant, whole_run, tmp_path, make_tiny_config):
    if variant:
        reference = train(make_tiny_config(tmp_path / "whole", steps=2 * N, log_every=3, **variant),
                          progress=False)
    else:
        reference = whole_run
    stopped = tmp_path / "stopped"
    train(make_tiny_config(stopped, steps=N, log_every=3, **variant), progress=False)
    assert load_checkpoint(stopped)["step"] == N
    train(make_tiny_config(stopped, steps=2 * N, log_every=3, **variant), resume=stopped,
          progress=False)

    expected, got = load_checkpoint(reference), load_checkpoint(stopped)
    assert got["step"] == expected["step"] == 2 * N
    for key in ("generator", "discriminator", "ema", "opt_g", "opt_d", "rng"):
        assert_identical(expected[key], got[key], key)
    assert got["ema"] is not None and got["opt_g"]["state"]  # there was something to compare
    # the logged losses after the resume are those of the uninterrupted run
    assert [r["step"] for r in records(stopped)] == [3, 6, 9, 12]
    for whole, resumed in zip(records(reference), records(stopped)):
        assert (whole["d_loss"], whole["g_loss"]) == (resumed["d_loss"], resumed["g_loss"])


@pytest.mark.parametrize("variant", [{"instance_noise": 0.1},
                                     {"dataset": "ring", "nz": None, "mlp_hidden": 16,
                                      "lr_decay": "linear"}], ids=["instance_noise", "ring-lr_decay"])
def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(
        variant, tmp_path, make_tiny_config, monkeypatch):
    """Stopped by Ctrl-C between two checkpoints, with instance noise or learning rates
    whose decay depends on the step: the resume redoes the lost steps exactly."""
    options = dict(steps=2 * N, log_every=2, checkpoint_every=4, **variant)
    reference = train(make_tiny_config(tmp_path / "whole", **options), progress=False)
    interrupted = tmp_path / "interrupted"
    generator_loss, calls = loop.losses.generator_loss, []

    def ctrl_c_in_step_seven(*args):
        calls.append(args)
        if len(calls) == N + 1:
            raise KeyboardInterrupt
        return generator_loss(*args)

    monkeypatch.setattr(loop.losses, "generator_loss", ctrl_c_in_step_seven)
    with pytest.raises(KeyboardInterrupt):
        train(make_tiny_config(interrupted, **options), progress=False)
    monkeypatch.undo()
    assert load_checkpoint(interrupted)["step"] == 4  # steps 5 and 6 are lost
    train(make_tiny_config(interrupted, **options), resume=interrupted, progress=False)

    expected, got = load_checkpoint(reference), load_checkpoint(interrupted)
    assert got["step"] == expected["step"] == 2 * N
    for key in ("generator", "discriminator", "ema", "opt_g", "opt_d", "rng"):
        assert_identical(expected[key], got[key], key)
    losses_by_step = [{r["step"]: (r["d_loss"], r["g_loss"]) for r in records(run)}
                      for run in (reference, interrupted)]
    assert losses_by_step[0] == losses_by_step[1] and len(losses_by_step[0]) == N


# --- the run directory -----------------------------------------------------------------


def test_run_directory_holds_config_checkpoint_metrics_and_samples(whole_run):
    config = json.loads((whole_run / "config.json").read_text())
    # resolved: the fields left to the dataset and the hardware are filled in
    assert config["arch"] == "dcgan" and config["d_norm"] == "batch" and config["channels"] == 1
    assert config["device"] == "cpu" and config["amp"] is False and config["name"] == "mnist5k"
    assert config["steps"] == 12 and config["nz"] == 16

    state = load_checkpoint(whole_run / "checkpoint.pt")
    assert state["config"] == config and state["step"] == 12
    card = ModelCard.from_dict(state["card"])
    assert card.step == 12 and card.output_shape == (1, 16, 16) and card.weights == "ema"
    assert card.model == {"nz": 16, "ngf": 8, "ndf": 8, "nc": 1, "image_size": 16,
                          "num_classes": 0, "pack": 1, "d_norm": "batch"}
    assert card.dataset["name"] == "mnist5k" and "[-1, 1]" in card.dataset["normalisation"]
    assert sorted(p.name for p in whole_run.glob("*.pt")) == ["checkpoint.pt"]
    assert not list(whole_run.glob(".*.tmp"))

    logged = records(whole_run)
    assert [r["step"] for r in logged] == [3, 6, 9, 12]
    for record in logged:
        assert METRICS <= record.keys()
        assert all(math.isfinite(record[k]) for k in METRICS - {"warnings", "step"})
        assert 0 < record["d_real"] < 1 and 0 < record["d_fake"] < 1  # probabilities for BCE
        assert record["grad_norm_g"] > 0 and record["grad_norm_d"] > 0
    assert "sample_spread" in logged[-1]  # samples were made at the last step

    samples = sorted((whole_run / "samples").glob("*.png"))
    assert [p.name for p in samples] == ["step_000012.png"]
    with Image.open(samples[0]) as grid:
        assert grid.format == "PNG"
        assert grid.size == (8 * (16 + 2) + 2,) * 2  # 64 fixed samples, 8 per row


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains_with_finite_losses(loss, tmp_path, make_tiny_config):
    run_dir = train(make_tiny_config(tmp_path, loss=loss, steps=3, log_every=1), progress=False)
    logged = records(run_dir)
    assert [r["step"] for r in logged] == [1, 2, 3]
    assert all(math.isfinite(r["d_loss"]) and math.isfinite(r["g_loss"]) for r in logged)
    config = json.loads((run_dir / "config.json").read_text())
    discriminator = load_checkpoint(run_dir)["discriminator"]
    has_batch_norm = any(name.endswith("running_mean") for name in discriminator)
    # batch norm couples the samples of a batch, which breaks the per-sample penalty
    assert config["d_norm"] == ("layer" if loss == "wgan-gp" else "batch")
    assert has_batch_norm == (loss != "wgan-gp")
    if loss == "wgan":  # the critic stays clipped after every step
        assert max(float(v.abs().max()) for k, v in discriminator.items()
                   if "running" not in k and "num_batches" not in k) <= 0.01


def test_compile_with_a_gradient_penalty_trains_with_d_eager(tmp_path, make_tiny_config, caplog):
    """torch.compile cannot differentiate R1's gradient: the bundled generator's own
    recipe (--r1) crashed at the first D step with --compile. D now stays eager."""
    caplog.set_level("INFO", logger="dcgan.train")
    config = make_tiny_config(tmp_path, r1=1.0, compile=True, steps=2, log_every=1)
    logged = records(train(config, progress=False))
    assert [r["step"] for r in logged] == [1, 2]
    assert all(math.isfinite(r["d_loss"]) and math.isfinite(r["r1"] if "r1" in r else 0.0)
               for r in logged)
    assert "D stays eager" in caplog.text
    assert loop.needs_double_backward(make_tiny_config(tmp_path, loss="wgan-gp"))
    assert not loop.needs_double_backward(make_tiny_config(tmp_path))


class CountingDataset(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.dataset, self.fetched = dataset, []
        self.num_classes = getattr(dataset, "num_classes", 0)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        self.fetched.append(index)
        return self.dataset[index]


def test_each_discriminator_step_takes_its_own_batch(tmp_path, make_tiny_config, monkeypatch):
    original, counted = loop.load_dataset, []

    def counting_load(*args, **kwargs):
        counted.append(CountingDataset(original(*args, **kwargs)))
        return counted[-1]

    monkeypatch.setattr(loop, "load_dataset", counting_load)
    train(make_tiny_config(tmp_path, dataset="fake", steps=3, d_steps=2, log_every=3), progress=False)
    fetched = counted[0].fetched
    assert len(fetched) == 3 * 2 * 8  # steps x d_steps x batch
    assert len(set(fetched)) == len(fetched)  # fresh samples, not the same batch twice


def test_r1_adds_half_gamma_times_the_penalty_at_d_inputs(tmp_path, make_tiny_config, monkeypatch):
    seen = []
    penalty = loop.losses.r1_penalty

    def spy(real_logits, real_inputs):
        value = penalty(real_logits, real_inputs)
        seen.append((real_inputs.shape, real_inputs.requires_grad, real_inputs.is_leaf, float(value.detach())))
        return value

    monkeypatch.setattr(loop.losses, "r1_penalty", spy)
    plain = records(train(make_tiny_config(tmp_path / "plain", steps=1, log_every=1), progress=False))
    assert seen == []  # off by default
    gamma = 3.0
    with_r1 = records(train(make_tiny_config(tmp_path / "r1", steps=2, d_steps=2, r1=gamma,
                                             log_every=1), progress=False))
    assert len(seen) == 4  # every discriminator step
    shape, requires_grad, leaf, first = seen[0]
    assert shape[0] == 8 and requires_grad and leaf and first > 0  # the batch of real images
    # same seed, same first step: the only difference in D's loss is gamma/2 * penalty
    second = train(make_tiny_config(tmp_path / "r1-one", steps=1, r1=gamma, log_every=1), progress=False)
    assert records(second)[0]["d_loss"] == pytest.approx(plain[0]["d_loss"] + 0.5 * gamma * seen[-1][3],
                                                         rel=1e-5)
    assert math.isfinite(with_r1[-1]["d_loss"])


def test_mlp_trains_on_the_ring(tmp_path, make_tiny_config):
    config = dict(dataset="ring", nz=None, mlp_hidden=32, batch_size=32, log_every=10)
    first = train(make_tiny_config(tmp_path / "one", steps=1, **config), progress=False)
    run_dir = train(make_tiny_config(tmp_path / "thirty", steps=30, **config), progress=False)
    resolved = json.loads((run_dir / "config.json").read_text())
    assert resolved["arch"] == "mlp" and resolved["nz"] == 2
    # points, not images: the samples are GAN Lab's frames of the game (tests/test_ganlab.py)
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step_000030.png", "training.gif"]
    generator, card = load_torch_generator(run_dir, weights="raw")
    assert card.arch == "mlp" and card.output_shape == (2,) and not card.is_image
    with torch.no_grad():
        points = generator(torch.randn(100, 2))
    assert points.shape == (100, 2) and torch.isfinite(points).all()
    start, _ = load_torch_generator(first, weights="raw")  # same seed: the same initial weights
    moved = [not torch.equal(a, b) for a, b in zip(start.parameters(), generator.parameters())]
    assert all(moved)
    assert all(math.isfinite(r["d_loss"]) for r in records(run_dir))


def test_a_short_toy_run_moves_toward_the_modes(tmp_path, make_tiny_config):
    """The PacGAN figures of the EMA generator, evaluated twice on 2,500 points: later,
    more of the ring's modes are covered and more samples lie on them."""
    config = make_tiny_config(tmp_path / "ring", dataset="ring", nz=None, mlp_hidden=256,
                              batch_size=64, steps=1200, lr_decay="none", log_every=600,
                              eval_every=600, eval_samples=2500)
    early, late = [r["eval"] for r in records(train(config, progress=False))]
    assert late["modes"] >= early["modes"] and late["modes"] >= 6
    assert late["high_quality"] > early["high_quality"] + 10


def test_recipes_train_with_their_optimisers_and_rates_decay_to_zero(tmp_path, make_tiny_config):
    toy = dict(dataset="ring", nz=None, mlp_hidden=16, steps=4, log_every=2)
    wgan = load_checkpoint(train(make_tiny_config(tmp_path / "wgan", recipe="wgan", **toy),
                                 progress=False))
    assert wgan["config"]["lr_decay"] == "linear" and wgan["config"]["d_steps"] == 5
    assert "square_avg" in wgan["opt_d"]["state"][0]  # RMSProp's, not Adam's
    # the last step ran at 1/4 of the rates: linear decay to 0 after step 4
    assert [group["lr"] for group in wgan["opt_d"]["param_groups"]] == [pytest.approx(5e-5 / 4)]
    clipped = [param.abs().max() for param in wgan["discriminator"].values()]
    assert max(clipped) <= 0.01  # the critic's weights are clipped
    hinge = load_checkpoint(train(make_tiny_config(tmp_path / "hinge", recipe="hinge",
                                                   lr_decay="none", **toy), progress=False))
    assert "exp_avg" in hinge["opt_d"]["state"][0]
    assert [g["lr"] for g in hinge["opt_g"]["param_groups"] + hinge["opt_d"]["param_groups"]] == [
        1e-4, 4e-4]
    assert hinge["opt_g"]["param_groups"][0]["betas"] == (0.0, 0.9)


def test_conditional_training_makes_a_class_conditional_generator(conditional_run):
    generator, card = load_torch_generator(conditional_run)
    assert card.num_classes == 10 and card.dataset["num_classes"] == 10
    latents = torch.randn(1, card.nz).repeat(10, 1)
    with torch.no_grad():
        images = generator(latents, torch.arange(10))
    assert images.shape == (10, 1, 16, 16)
    assert len({tuple(image.flatten().tolist()) for image in images}) == 10
    assert any(k.startswith("label_projection") for k in load_checkpoint(conditional_run)["discriminator"])


def test_latent_classes_train_an_unconditional_generator_told_its_class_by_its_latent(
        tmp_path, make_tiny_config):
    """G takes no label and exports as unconditional; D is conditional and is told the
    real batch's labels for the reals and argmax(code @ z) for the fakes."""
    from models.latent import class_code, code_classes
    from training.loop import _build, _discriminator_step

    config = make_tiny_config(tmp_path / "run", latent_classes=True, steps=4)
    gan = _build(config, torch.device("cpu"), None, 0, 1)
    assert not hasattr(gan.generator, "label_embedding") and gan.num_classes == 10
    told, made_with = [], []
    d_train, g_train = gan.d_train, gan.g_train
    gan.d_train = lambda images, labels: told.append(labels) or d_train(images, labels)
    gan.g_train = lambda latents, labels: made_with.append(labels) or g_train(latents, labels)
    latents, real_labels = torch.randn(8, config.nz), torch.zeros(8, dtype=torch.long)
    real = torch.zeros(8, 1, 16, 16)
    _, fake_labels, _, _ = _discriminator_step(config, gan, real, latents, real_labels, 0, keep_graph=True)
    expected = code_classes(latents.numpy(), class_code(config.nz, 10))
    assert made_with == [None]
    assert told[0].tolist() == [0] * 8 and told[1].tolist() == expected.tolist() == fake_labels.tolist()
    assert len(set(expected.tolist())) > 1

    run_dir = train(config, progress=False)
    generator, card = load_torch_generator(run_dir)
    assert card.num_classes == 0 and card.dataset["num_classes"] == 10
    with torch.no_grad():
        assert generator(torch.randn(2, config.nz)).shape == (2, 1, 16, 16)
    assert any(k.startswith("label_projection") for k in load_checkpoint(run_dir)["discriminator"])


def test_options_that_do_not_fit_the_dataset(tmp_path, make_tiny_config):
    with pytest.raises(TrainingError, match="--conditional needs a labelled dataset; folder has no labels"):
        train(make_tiny_config(tmp_path, dataset="folder", conditional=True), progress=False)
    with pytest.raises(TrainingError, match="--latent-classes needs a labelled dataset; folder has no"):
        train(make_tiny_config(tmp_path, dataset="folder", latent_classes=True), progress=False)
    with pytest.raises(TrainingError, match="--latent-classes needs --arch dcgan"):
        make_tiny_config(tmp_path, dataset="ring", nz=None, latent_classes=True)
    with pytest.raises(TrainingError, match="ring holds 2-D points: use --arch mlp"):
        train(make_tiny_config(tmp_path, dataset="ring", arch="dcgan"), progress=False)
    with pytest.raises(ValueError, match="image-size must be a power of two"):
        train(make_tiny_config(tmp_path, image_size=48), progress=False)
    with pytest.raises(TrainingError, match="fewer than one batch of 8000"):
        train(make_tiny_config(tmp_path, batch_size=8000), progress=False)


def test_periodic_evaluation_keeps_the_checkpoint_with_the_lowest_fd(tmp_path, make_tiny_config):
    figures, modes = iter([{"fd": 5.0}, {"fd": 3.0}, {"fd": 4.0}]), []

    def evaluator(generator):
        modes.append(generator.training)
        return next(figures)

    run_dir = train(make_tiny_config(tmp_path, steps=6, log_every=2, eval_every=2),
                    progress=False, evaluator=evaluator)
    assert [r["eval"] for r in records(run_dir)] == [{"fd": 5.0}, {"fd": 3.0}, {"fd": 4.0}]
    assert modes == [False] * 3  # the EMA generator, in eval mode
    best, latest = load_checkpoint(run_dir / "best.pt"), load_checkpoint(run_dir)
    assert best["step"] == 4 and best["best_fd"] == latest["best_fd"] == 3.0
    assert best["card"]["step"] == 4 and best["card"]["quality"] == {"fd": 3.0, "step": 4}
    assert latest["card"]["quality"] == {"fd": 4.0, "step": 6}


def test_best_checkpoint_goes_by_the_mean_fd_ratio_of_both_feature_networks(tmp_path, make_tiny_config):
    """Step 4 has the lower FD in the first network, step 2 the lower mean of the two
    networks' ratios: best.pt is step 2."""
    figures = iter([{"fd": 5.0, "fd_ratio": 2.0, "fd2_ratio": 2.0, "fd_ratio_mean": 2.0},
                    {"fd": 3.0, "fd_ratio": 1.2, "fd2_ratio": 3.2, "fd_ratio_mean": 2.2}])
    run_dir = train(make_tiny_config(tmp_path, steps=4, log_every=2, eval_every=2),
                    progress=False, evaluator=lambda generator: next(figures))
    best = load_checkpoint(run_dir / "best.pt")
    assert best["step"] == 2 and best["best_fd"] == 2.0


def test_labels_fade_in_on_schedule_and_best_waits_for_full_conditioning(tmp_path, make_tiny_config):
    """--conditioning-start 2 --conditioning-steps 4: strength 0 for steps 1-2, then
    1/4, 2/4, 3/4, 1. An evaluation before full strength never becomes best.pt, however
    good its figure: exported, that model would be fully conditional."""
    from training.config import conditioning_at

    config = make_tiny_config(tmp_path, conditional=True, conditioning_start=2,
                              conditioning_steps=4, steps=8, log_every=2, eval_every=2)
    assert [conditioning_at(config, s) for s in range(8)] == [0, 0, 0, 0.25, 0.5, 0.75, 1, 1]
    seen = []
    figures = iter([{"fd": 1.0}, {"fd": 2.0}, {"fd": 3.0}, {"fd": 2.5}])

    def evaluator(generator):
        seen.append(float(generator.conditioning))
        return next(figures)

    run_dir = train(config, progress=False, evaluator=evaluator)
    assert seen == [0.0, 0.25, 0.75, 1.0]  # the EMA follows G's strength
    assert load_checkpoint(run_dir / "best.pt")["step"] == 8


def test_conditioning_schedule_needs_a_conditional_run(tmp_path, make_tiny_config):
    with pytest.raises(ValueError, match="conditioning-start applies to a run with labels: add "
                                         "--conditional or --latent-classes"):
        make_tiny_config(tmp_path, conditioning_start=10).validate()
    with pytest.raises(ValueError, match="conditional and latent-classes exclude each other"):
        make_tiny_config(tmp_path, conditional=True, latent_classes=True)
    with pytest.raises(ValueError, match="latent-classes cannot be combined with pack > 1"):
        make_tiny_config(tmp_path, latent_classes=True, pack=2)


def test_eval_every_evaluates_without_an_evaluator_given(tmp_path, make_tiny_config):
    """From Python as from the command line, eval_every alone turns evaluation on."""
    config = make_tiny_config(tmp_path, dataset="ring", nz=None, mlp_hidden=16, batch_size=32,
                              steps=4, log_every=2, eval_every=4, eval_samples=200)
    logged = records(train(config, progress=False))
    assert "eval" not in logged[0] and {"fd", "modes"} <= logged[1]["eval"].keys()
    assert (tmp_path / "best.pt").is_file()


def test_train_takes_a_resolved_config(tmp_path):
    from training.config import TrainConfig

    with pytest.raises(ValueError, match="resolved config .* arch, nz, d_norm"):
        train(TrainConfig(run_dir=str(tmp_path), device="cpu"), progress=False)
    assert not list(tmp_path.iterdir())


# --- failure warnings ---------------------------------------------------------------------


def test_ema_batch_norm_statistics_fit_the_ema_weights(conditional_run):
    """The EMA generator's running statistics are its own (standing statistics), not
    the raw generator's, which belong to other weights."""
    state = load_checkpoint(conditional_run)
    ema, card = load_torch_generator(conditional_run, weights="ema")
    first_norm = ema.main[1]  # after the first transposed convolution
    torch.manual_seed(123)
    latents = torch.randn(512, card.nz)
    labels = torch.arange(512) % card.num_classes
    with torch.no_grad():
        inputs = torch.cat([latents, ema.label_embedding(labels)], dim=1)[:, :, None, None]
        activations = ema.main[0](inputs)  # (N, C, 4, 4)
    batch_var = activations.var(dim=(0, 2, 3))
    assert torch.allclose(first_norm.running_var, batch_var, rtol=0.25)
    assert not torch.equal(state["generator"]["main.1.running_var"], first_norm.running_var)


def test_a_collapsed_generator_is_reported(tmp_path, make_tiny_config, monkeypatch, caplog):
    """Force a generator whose output is constant: its last layer is zero and frozen."""
    build = loop.build_models

    def collapsed_models(arch, model):
        generator, discriminator = build(arch, model)
        last = generator.main[-2]  # the ConvTranspose2d before tanh
        torch.nn.init.zeros_(last.weight)
        last.weight.requires_grad_(False)
        return generator, discriminator

    monkeypatch.setattr(loop, "build_models", collapsed_models)
    with caplog.at_level("WARNING", logger="dcgan.train"):
        run_dir = train(make_tiny_config(tmp_path, steps=2, log_every=2), progress=False)
    last = records(run_dir)[-1]
    assert last["sample_spread"] == 0.0
    assert any(w.startswith("mode collapse") for w in last["warnings"])
    assert "step 2: mode collapse" in caplog.text


def test_failure_warnings_from_a_record():
    fine = {"d_loss": 1.2, "grad_norm_g": 0.5, "grad_norm_d": 2.0}
    torch.manual_seed(0)
    diverse = torch.rand(64, 1, 16, 16) * 2 - 1
    record = dict(fine)
    assert failure_warnings(record, diverse, "nonsaturating") == []
    assert record["sample_spread"] > 0.5
    same = diverse[:1].repeat(64, 1, 1, 1)
    assert [w[:13] for w in failure_warnings(dict(fine), same, "hinge")] == ["mode collapse"]

    winning = {**fine, "d_loss": 0.001}
    assert "D wins outright" in failure_warnings(winning, None, "minimax")[0]
    assert failure_warnings(winning, None, "wgan") == []  # critic losses may be anything
    exploding = {**fine, "grad_norm_g": float("inf"), "grad_norm_d": 5e3}
    warnings = failure_warnings(exploding, None, "hinge")
    assert warnings == ["G gradient norm exploding (inf)", "D gradient norm exploding (5e+03)"]


# --- several processes ----------------------------------------------------------------------


def test_two_process_torchrun_with_gloo_writes_one_checkpoint(tmp_path):
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": str(REPO)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "training.cli", "train", "--dataset", "fake", "--image-size", "16", "--nz", "8",
        "--ngf", "4", "--ndf", "4", "--batch-size", "4", "--steps", "4", "--log-every", "2",
        "--device", "cpu", "--threads", "1", "--no-progress", "--run-dir", str(run_dir),
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in run_dir.glob("*.pt")) == ["checkpoint.pt"]
    assert [r["step"] for r in records(run_dir)] == [2, 4]  # rank 0 alone writes
    state = load_checkpoint(run_dir)
    assert state["step"] == 4
    logged = records(run_dir)[-1]
    assert logged["images_per_s"] == pytest.approx(logged["steps_per_s"] * 4 * 2)  # both ranks


def test_a_resume_takes_the_learning_rates_it_is_given(tmp_path, make_tiny_config):
    run = tmp_path / "run"
    train(make_tiny_config(run, steps=2, log_every=2), progress=False)
    train(make_tiny_config(run, steps=4, log_every=2, lr_g=1e-5, lr_d=3e-5), resume=run,
          progress=False)
    state = load_checkpoint(run)
    assert state["step"] == 4
    assert [g["lr"] for g in state["opt_g"]["param_groups"]] == [1e-5]
    assert [g["lr"] for g in state["opt_d"]["param_groups"]] == [3e-5]
    assert state["config"]["lr_g"] == 1e-5


def test_two_processes_train_with_distributed_data_parallel(tmp_path):
    """torchrun with two CPU processes (gloo on loopback): the process group starts with
    the project's options (timeout, device binding) and rank 0 writes the run."""
    torchrun = Path(sys.executable).with_name("torchrun")
    run_dir = tmp_path / "ddp"
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "training.cli",
               "train", "--dataset", "mnist5k", "--image-size", "16", "--nz", "16", "--ngf", "8",
               "--ndf", "8", "--batch-size", "8", "--steps", "3", "--log-every", "1",
               "--device", "cpu", "--threads", "1", "--run-dir", str(run_dir), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_checkpoint(run_dir)["step"] == 3
    assert [r["step"] for r in records(run_dir)] == [1, 2, 3]


# --- the EMA ramp-up -------------------------------------------------------------------------


def test_ema_decay_ramps_up_with_the_images_seen_to_the_configured_decay(make_tiny_config, tmp_path):
    config = make_tiny_config(tmp_path, batch_size=64)
    decays = [loop.ema_decay_at(config, step) for step in (1, 10, 120, 1000, 10_000, 20_000, 10**6)]
    assert decays == sorted(decays) and decays[0] < 1e-5  # the first average is the weights
    assert decays[2] == pytest.approx(0.5 ** (1 / 6), abs=1e-9)  # half-life 6 steps at step 120
    assert decays[-1] == decays[-2] == pytest.approx(0.999, abs=1e-12)  # the asymptote
    # the horizon is in images: half the batch size, twice the steps, the same average
    small = make_tiny_config(tmp_path, batch_size=32)
    assert loop.ema_decay_at(small, 240) ** 2 == pytest.approx(decays[2], abs=1e-9)
    # two processes see twice the images per step
    assert loop.ema_decay_at(small, 120, world=2) == pytest.approx(decays[2], abs=1e-12)
    fixed = make_tiny_config(tmp_path, ema_rampup=0.0)
    assert loop.ema_decay_at(fixed, 1) == loop.ema_decay_at(fixed, 10**6) == 0.999


def _distance(first: dict, second: dict) -> float:
    return math.sqrt(sum(float((first[k] - second[k]).pow(2).sum()) for k in first))


@pytest.mark.parametrize("rampup", [0.05, 0.0], ids=["ramped", "fixed-0.999"])
def test_an_early_ema_generator_follows_training_not_its_initial_weights(
        rampup, tmp_path, make_tiny_config):
    """What the sample grids show early in a run: with the ramp-up the averaged generator
    is near the trained weights; a fixed 0.999 from step 0 keeps it near the random start."""
    from models import build_models
    from training.run import model_spec

    config = make_tiny_config(tmp_path / "run", steps=20, ema_rampup=rampup)
    torch.manual_seed(config.seed)  # as the loop does before building the networks
    initial, _ = build_models(config.arch, model_spec(config))
    state = load_checkpoint(train(config, progress=False))
    params = {name for name, _ in initial.named_parameters()}
    start = {k: v for k, v in initial.state_dict().items() if k in params}
    raw = {k: state["generator"][k] for k in params}
    ema = {k: state["ema"][k] for k in params}
    travelled = _distance(start, raw)
    if rampup:
        assert _distance(ema, raw) < 0.1 * travelled
    else:
        assert _distance(ema, start) < 0.1 * travelled


def test_top_k_share_shrinks_per_epoch_to_its_floor():
    from training.config import TOP_K_DECAY, TrainConfig, top_k_share

    assert [top_k_share(TrainConfig(), epoch) for epoch in (0, 50, 500)] == [1.0, 1.0, 1.0]  # off
    config = TrainConfig(top_k=0.5)
    assert top_k_share(config, 0) == 1.0
    assert top_k_share(config, 10) == pytest.approx(TOP_K_DECAY ** 10)
    assert top_k_share(config, 1000) == 0.5


def test_the_generator_learns_only_from_the_fakes_d_scores_highest():
    """Top-k training: the fakes outside the top share get no gradient at all."""
    from types import SimpleNamespace

    from training.config import TrainConfig

    class Score(torch.nn.Module):  # D scores an image by the sum of its pixels
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, images, labels=None):
            return self.scale * images.reshape(images.shape[0], -1).sum(1)

    shift = torch.nn.Parameter(torch.zeros(6, 1, 2, 2))
    base = torch.tensor([0.3, -1.0, 2.0, 0.1, -0.5, 1.5]).reshape(6, 1, 1, 1).expand(6, 1, 2, 2)
    judge = Score()
    gan = SimpleNamespace(discriminator=judge, d_for_g=judge, augments=(),
                          opt_g=torch.optim.SGD([shift], lr=0.1))
    loop._generator_step(TrainConfig(top_k=0.5, loss="nonsaturating"), gan, base + shift, None, step=0, share=0.5)
    learnt = shift.grad.reshape(6, -1).abs().sum(1) > 0
    assert learnt.tolist() == [True, False, True, False, False, True]  # scores 2.0, 1.5, 0.3
    shift.grad = None
    loop._generator_step(TrainConfig(loss="nonsaturating"), gan, base + shift, None, step=0)
    assert (shift.grad.reshape(6, -1).abs().sum(1) > 0).all()  # share 1: every fake
    assert judge.scale.requires_grad  # D is unfrozen again


def test_top_k_training_learns_from_a_share_shrinking_per_epoch(tmp_path, make_tiny_config,
                                                                  monkeypatch):
    sizes = []
    original = loop.losses.generator_loss

    def spy(loss, fake_logits):
        sizes.append(fake_logits.numel())
        return original(loss, fake_logits)

    monkeypatch.setattr(loop.losses, "generator_loss", spy)
    monkeypatch.setattr("training.config.TOP_K_DECAY", 0.5)  # 1, 0.5, 0.25 ... per epoch
    monkeypatch.setattr("training.data.FAKE_DATASET_SIZE", 16)  # batches of 8: 2 steps an epoch
    run = train(make_tiny_config(tmp_path, dataset="fake", steps=6, top_k=0.25, log_every=2),
                progress=False)
    assert sizes == [8, 8, 4, 4, 2, 2]
    assert json.loads((run / "config.json").read_text())["top_k"] == 0.25
