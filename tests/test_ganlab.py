"""GAN Lab's view of a 2-D run: the frames a toy run writes, and that what they show is
the data's (D's verdict in the background, minus G's loss gradient in the arrows, the
manifold's density), with the grid KL and JS beside the PacGAN figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from models.mlp import MLPConfig, MLPDiscriminator, MLPGenerator
from training.config import LOSSES
from training.data import toy_modes
from training.evaluate.toys import grid_divergences, toy_figures
from training.ganlab import GameFrames, game_view, mesh_density, noise_grid
from training.loop import train
from training.plots import draw_game, new_figure

TOY = dict(dataset="ring", nz=None, mlp_hidden=16, batch_size=32, log_every=5, sample_every=10)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def gif_frames(path: Path) -> list[np.ndarray]:
    frames = []
    with Image.open(path) as gif:
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB")))
    return frames


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, make_tiny_config) -> Path:
    return train(make_tiny_config(tmp_path_factory.mktemp("toy") / "run", steps=20, **TOY),
                 progress=False)


def test_a_toy_run_writes_a_frame_per_sample_step_and_the_whole_run_as_a_gif(toy_run):
    samples = toy_run / "samples"
    assert sorted(p.name for p in samples.glob("step_*.png")) == ["step_000010.png", "step_000020.png"]
    frame = np.asarray(Image.open(samples / "step_000020.png").convert("RGB"))
    assert frame.shape[0] > 300 and frame.shape[1] > 600 and frame.std() > 10  # a picture, not a blank
    frames = gif_frames(samples / "training.gif")
    assert len(frames) == 2 and frames[0].shape == frame.shape
    assert not np.array_equal(frames[0], frames[1])  # the game moved, the curves grew
    logged = records(toy_run)
    framed = [r["step"] for r in logged if "grid_kl" in r]
    assert framed == [10, 20]
    for record in logged:
        if "grid_kl" in record:
            assert record["grid_kl"] >= 0 and 0 <= record["grid_js"] <= math.log(2) + 1e-9


def test_the_frames_go_to_tensorboard(toy_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(toy_run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert [image.step for image in events.Images("gan_lab")] == [10, 20]
    assert {"grid_kl", "grid_js"} <= set(events.Tags()["scalars"])


def test_a_resumed_toy_run_animates_the_frames_of_both_parts(tmp_path, make_tiny_config):
    first = train(make_tiny_config(tmp_path / "run", steps=10, **TOY), progress=False)
    config = make_tiny_config(tmp_path / "run", steps=20, **TOY)
    train(config, resume=first, progress=False)
    assert len(gif_frames(first / "samples" / "training.gif")) == 2
    # the curves of a resumed run's frames start at its first step, not at the resume
    history = GameFrames(config, first, torch.device("cpu"), resumed_step=10).history
    assert [point["step"] for point in history] == [5, 10] and "grid_js" in history[1]


def _pair(loss: str, nz: int = 2, pack: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    generator = MLPGenerator(MLPConfig(nz=nz, hidden=16))
    discriminator = MLPDiscriminator(MLPConfig(nz=nz, hidden=16, pack=pack))
    return generator, discriminator


def _view(loss: str, nz: int = 2, pack: int = 1, generator=None):
    default, discriminator = _pair(loss, nz, pack)
    real = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
    latents = torch.randn(200, nz, generator=torch.Generator().manual_seed(1))
    view = game_view(generator or default, discriminator, loss, "ring", real, latents, step=7, shown=60)
    return view, generator or default, discriminator


@pytest.mark.parametrize("loss", ["nonsaturating", "hinge", "wgan-gp"])
def test_the_background_at_a_point_is_the_discriminators_verdict_there(loss):
    view, _, discriminator = _view(loss)
    figure = new_figure(4, 4)
    image = draw_game(figure.add_subplot(), view)["background"]
    left, right, bottom, top = image.get_extent()
    shown = np.asarray(image.get_array())  # (rows: y, cols: x)
    rng = np.random.default_rng(3)
    points = rng.uniform(left, right, size=(50, 2))
    rows = ((points[:, 1] - bottom) / (top - bottom) * shown.shape[0]).astype(int)
    cols = ((points[:, 0] - left) / (right - left) * shown.shape[1]).astype(int)
    # D at the centre of the cell holding each point, computed here from D itself
    width = (right - left) / shown.shape[1]
    centres = np.stack([left + (cols + 0.5) * width, bottom + (rows + 0.5) * width], axis=1)
    with torch.no_grad():
        logits = discriminator(torch.tensor(centres, dtype=torch.float32))
        if loss == "wgan-gp":  # a critic has no fixed zero: the midpoint of real and fake
            midpoint = (discriminator(torch.tensor(view.real)).mean()
                        + discriminator(torch.tensor(view.fake)).mean()) / 2
            logits = logits - midpoint
    np.testing.assert_allclose(shown[rows, cols], torch.sigmoid(logits).numpy(), atol=1e-5)
    assert image.get_cmap().name == "PRGn" and image.norm.vmin == 0 and image.norm.vmax == 1
    # high verdicts are green (real), low ones purple (fake)
    green, purple = image.cmap(image.norm(0.95)), image.cmap(image.norm(0.05))
    assert green[1] > green[0] and purple[0] > purple[1]


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("pack", [1, 2])
def test_arrows_point_along_minus_the_generator_losss_gradient_at_each_sample(loss, pack):
    view, _, discriminator = _view(loss, pack=pack)
    figure = new_figure(4, 4)
    arrows = draw_game(figure.add_subplot(), view)["arrows"]
    np.testing.assert_allclose(arrows.get_offsets(), view.fake, atol=1e-6)
    drawn = np.stack([arrows.U, arrows.V], axis=1)
    for point, arrow in zip(view.fake[:10], drawn[:10]):
        x = torch.tensor(point[None], requires_grad=True)
        logit = discriminator(x.repeat_interleave(pack, 0))  # D judges `pack` copies of x
        own_loss = {"minimax": -F.softplus(logit), "nonsaturating": F.softplus(-logit)}.get(loss, -logit)
        (grad,) = torch.autograd.grad(own_loss.sum(), x)
        expected = -grad[0].numpy()
        if np.linalg.norm(expected) < 1e-8:
            continue
        cosine = arrow @ expected / (np.linalg.norm(arrow) * np.linalg.norm(expected))
        assert cosine == pytest.approx(1.0, abs=1e-4)
        np.testing.assert_allclose(arrow, expected, rtol=1e-4, atol=1e-7)  # unscaled data


def test_drawing_leaves_d_without_parameter_gradients_and_both_networks_in_their_mode():
    generator, discriminator = _pair("nonsaturating")
    generator.train(), discriminator.train()
    real = np.zeros((10, 2), np.float32)
    game_view(generator, discriminator, "nonsaturating", "ring", real, torch.randn(20, 2), step=1)
    assert generator.training and discriminator.training
    assert all(p.grad is None for p in discriminator.parameters())


def test_the_manifold_mesh_is_the_image_of_a_regular_noise_grid_with_its_density():
    scale = 2.0

    class Affine(torch.nn.Module):
        def forward(self, latents, labels=None):
            return scale * latents + torch.tensor([0.5, -0.5])

    view, _, _ = _view("nonsaturating", generator=Affine())
    grid = noise_grid(2).reshape(view.mesh.shape).numpy()
    np.testing.assert_allclose(view.mesh, scale * grid + [0.5, -0.5], atol=1e-5)
    # the density of each cell is that of N(b, scale^2 I) there: check the central cells
    middle = view.density.shape[0] // 2
    centre = view.mesh[middle:middle + 2, middle:middle + 2].reshape(-1, 2).mean(axis=0)
    offset = (centre - [0.5, -0.5]) / scale
    expected = np.exp(-0.5 * offset @ offset) / (2 * np.pi * scale**2)
    assert view.density[middle, middle] == pytest.approx(expected, rel=0.02)
    # a mesh folded onto a tenth of the area is ten times as dense
    np.testing.assert_allclose(mesh_density(view.mesh * math.sqrt(0.1)), 10 * view.density, rtol=1e-4)


def test_a_latent_larger_than_two_meshes_a_slice_and_says_which():
    view, _, _ = _view("hinge", nz=5)
    assert view.mesh.shape == (21, 21, 2)
    assert "latent dims 1-2 of 5" in view.mesh_note
    latents = noise_grid(5)
    assert torch.all(latents[:, 2:] == 0) and len(torch.unique(latents[:, 0])) == 21


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_grid_divergences_are_near_zero_for_real_data_and_large_for_dropped_modes(name):
    centres, std = toy_modes(name)
    rng = np.random.default_rng(0)
    real = centres[rng.integers(len(centres), size=2500)] + std * rng.standard_normal((2500, 2))
    half = centres[rng.integers(len(centres) // 2, size=2500)] + std * rng.standard_normal((2500, 2))
    one = centres[0] + std * rng.standard_normal((2500, 2))
    scores = [grid_divergences(points, centres, std) for points in (real, half, one)]
    assert scores[0]["grid_kl"] < 0.05 and scores[0]["grid_js"] < 0.01
    assert scores[0]["grid_js"] < scores[1]["grid_js"] < scores[2]["grid_js"] <= math.log(2)
    assert scores[0]["grid_kl"] < scores[1]["grid_kl"] < scores[2]["grid_kl"]
    # dropping half the modes: m is 3/16 on a kept mode, 1/16 on a dropped one, and
    # JS = 0.5 * 0.5 log(4/3) + 0.5 * log(4/3) = 0.216 (smoothing takes a little off)
    assert scores[1]["grid_js"] == pytest.approx(0.75 * math.log(4 / 3), abs=0.03)
    nowhere = grid_divergences(np.full((100, 2), np.nan), centres, std)
    assert math.isfinite(nowhere["grid_kl"])
    assert {"grid_kl", "grid_js"} <= set(toy_figures(real, centres, std))  # beside PacGAN's
