"""GAN Lab's view of a 2-D run (Kahng et al. 2018): the numbers behind each frame.

For a generator and a discriminator on a 2-D toy, `game_view` computes what the picture
shows, and nothing here draws (training/plots.py does, from these numbers only):

- `verdict`: the discriminator's verdict at the centre of every cell of the toy's grid
  (the grid of training/evaluate/toys.py, which the KL and JS divergences also use):
  D(x) as a probability for the BCE losses and hinge (sigmoid of the logit, whose sign
  hinge trains); a Wasserstein critic's value has no fixed zero, so its verdict is the
  sigmoid of the critic minus the midpoint of its means on the real and the generated
  points shown. Above 0.5: likely real. With PacGAN, D judges `pack` copies of x.
- `mesh`: the generator's manifold, the image of a regular grid of noise. The grid is
  regular in the Gaussian's quantiles, so every mesh cell holds the same probability
  mass, and the generated density in a cell is that mass over the cell's area
  (`density`). With a latent of more than two dimensions, the mesh is the image of the
  plane of the first two, the others held at 0 (`mesh_note` says so).
- `arrows`: minus the gradient of the generator's loss with respect to each generated
  sample: where G's next step moves them.
- `grid_kl`, `grid_js`: the divergences between the real mixture and the generated
  points on that grid (`training.evaluate.toys.grid_divergences`).

`GameFrames` writes one frame per sample step into a run (samples/step_*.png and
TensorBoard), with the metric curves up to that step beside it, and at the end the
whole run as samples/training.gif. A frame's numbers take milliseconds; its drawing
about 0.1 s (BENCHMARKS.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from training import losses
from training.data import load_dataset, toy_modes
from training.evaluate.toys import TOY_EVALUATION_SAMPLES, grid_divergences, grid_edges
from training.plots import GameView

MESH_LINES = 21  # noise grid vertices per side: 20 x 20 mesh cells
MESH_QUANTILES = (0.02, 0.98)  # the Gaussian's quantiles the noise grid spans
SHOWN_POINTS = 300  # real and generated dots drawn per frame
CRITIC_LOSSES = ("wgan", "wgan-gp")
CURVE_KEYS = ("step", "d_loss", "g_loss", "grid_kl", "grid_js")  # what a frame's curves show
GIF_NAME = "training.gif"
GIF_FRAME_MS = 250


def cell_centres(edges: np.ndarray) -> np.ndarray:
    """(C*C, 2) centres of the grid's cells, row by row: y = centres[i], x = centres[j]."""
    mids = (edges[:-1] + edges[1:]) / 2
    ys, xs = np.meshgrid(mids, mids, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def _judge(discriminator: nn.Module, points: torch.Tensor) -> torch.Tensor:
    """D's logit for each point (N,), PacGAN or not: a pack holds copies of the point."""
    pack = getattr(getattr(discriminator, "config", None), "pack", 1)
    return discriminator(points.repeat_interleave(pack, 0)).float()  # (N,)


def discriminator_verdict(discriminator: nn.Module, loss: str, points: np.ndarray,
                          real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """D's verdict (N,) in [0, 1] at `points` (N, 2); `real` and `fake` set a critic's
    midpoint (see the module docstring)."""
    device = next(discriminator.parameters()).device
    with torch.no_grad():
        logits = _judge(discriminator, torch.as_tensor(points, dtype=torch.float32, device=device))
        if loss in CRITIC_LOSSES:
            shown = [_judge(discriminator, torch.as_tensor(p, dtype=torch.float32, device=device))
                     for p in (real, fake)]
            logits = logits - (shown[0].mean() + shown[1].mean()) / 2
    return torch.sigmoid(logits).cpu().numpy()


def generator_gradients(discriminator: nn.Module, loss: str, fake: np.ndarray) -> np.ndarray:
    """(F, 2): minus the gradient of G's loss with respect to each generated point, the
    loss being that of the point alone (so the arrows do not shrink with F)."""
    device = next(discriminator.parameters()).device
    points = torch.as_tensor(fake, dtype=torch.float32, device=device).requires_grad_(True)
    with torch.enable_grad():
        # summed over points, each term one point's loss: its gradient is the point's own
        total = losses.generator_loss(loss, _judge(discriminator, points)) * len(points)
        (grads,) = torch.autograd.grad(total, points)  # D's parameter gradients untouched
    return -grads.cpu().numpy()


def noise_grid(nz: int, lines: int = MESH_LINES) -> torch.Tensor:
    """(lines*lines, nz) latents: a regular grid in the quantiles of the first two
    coordinates, the others 0."""
    quantiles = torch.linspace(*MESH_QUANTILES, lines, dtype=torch.float64)
    values = torch.special.ndtri(quantiles).float()
    ys, xs = torch.meshgrid(values, values, indexing="ij")
    latents = torch.zeros(lines * lines, nz)
    latents[:, 0], latents[:, 1] = xs.ravel(), ys.ravel()
    return latents


def mesh_density(mesh: np.ndarray) -> np.ndarray:
    """(M-1, M-1) density of each mesh cell: its share of the noise (equal for all) over
    its area (the shoelace formula on its four corners)."""
    a, b, c, d = mesh[:-1, :-1], mesh[:-1, 1:], mesh[1:, 1:], mesh[1:, :-1]  # corners in order
    corners = np.stack([a, b, c, d], axis=0)  # (4, M-1, M-1, 2)
    x, y = corners[..., 0], corners[..., 1]
    area = 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=0) - np.roll(x, -1, axis=0) * y, axis=0))
    share = (MESH_QUANTILES[1] - MESH_QUANTILES[0]) ** 2 / (mesh.shape[0] - 1) ** 2
    return share / np.maximum(area, 1e-12)


def game_view(generator: nn.Module, discriminator: nn.Module, loss: str, dataset: str,
              real: np.ndarray, latents: torch.Tensor, step: int,
              shown: int = SHOWN_POINTS) -> GameView:
    """Everything one frame shows, for G and D as they are; `latents` (N, nz) are the
    run's fixed noise for the generated points (all of them measure the divergences,
    the first `shown` are drawn)."""
    centres, std = toy_modes(dataset)
    edges = grid_edges(centres)
    nz = latents.shape[1]
    modes = [(module, module.training) for module in (generator, discriminator)]
    for module, _ in modes:
        module.eval()
    try:
        with torch.no_grad():
            points = generator(latents).float().cpu().numpy()  # (N, 2)
            mesh = generator(noise_grid(nz).to(latents.device)).float().cpu().numpy()
        fake = points[:shown]
        real = real[:shown]
        verdict = discriminator_verdict(discriminator, loss, cell_centres(edges), real, fake)
        arrows = generator_gradients(discriminator, loss, fake)
    finally:
        for module, training in modes:
            module.train(training)
    cells = len(edges) - 1
    mesh = mesh.reshape(MESH_LINES, MESH_LINES, 2)
    note = "" if nz == 2 else f"mesh: latent dims 1-2 of {nz}, the others 0"
    return GameView(step=step, dataset=dataset, loss=loss, edges=edges, verdict=verdict.reshape(cells, cells),
                    real=real, fake=fake, arrows=arrows, mesh=mesh, density=mesh_density(mesh),
                    mesh_note=note, **grid_divergences(points, centres, std))


class GameFrames:
    """The frames of one toy run: `observe` every log record (the loss curves), a frame
    on sample steps (returns the divergences for the record), `finish` the GIF."""

    def __init__(self, config, run_dir: Path, device: torch.device, resumed_step: int = 0):
        self.config, self.run_dir = config, Path(run_dir)
        self.samples = self.run_dir / "samples"
        stream = torch.Generator().manual_seed(config.seed + 54321)  # the training stream untouched
        self.latents = torch.randn(TOY_EVALUATION_SAMPLES, config.nz, generator=stream).to(device)
        real = load_dataset(config.dataset, split="test", seed=config.seed, num_samples=SHOWN_POINTS)
        self.real = np.stack([np.asarray(real[i][0]) for i in range(len(real))])
        self.history: list[dict] = self._earlier_records(resumed_step) if resumed_step else []

    def _earlier_records(self, upto: int) -> list[dict]:
        """A resumed run's curves start where it stopped: its records up to that step."""
        from training.report import read_log

        log, points = read_log(self.run_dir / "metrics.jsonl"), {}
        for key in CURVE_KEYS[1:]:
            for step, value in zip(*log.series.get(key, ([], []))):
                if step <= upto:
                    points.setdefault(step, {"step": step})[key] = value
        return [points[step] for step in sorted(points)]

    def observe(self, record: dict, gan, writer=None, frame: bool = False) -> dict:
        """Keep the record's curves; on a frame step draw and write the frame. Returns what
        goes into the record (`grid_kl`, `grid_js` on frame steps)."""
        self.history.append(_curve_point(record))
        if not frame:
            return {}
        from models.generation import atomic_write
        from training.plots import game_frame, png_bytes

        view = game_view(gan.generator, gan.discriminator, self.config.loss, self.config.dataset,
                         self.real, self.latents, record["step"])
        figures = {"grid_kl": view.grid_kl, "grid_js": view.grid_js}
        self.history[-1].update(figures)
        pixels = game_frame(view, self.history, total_steps=self.config.steps)  # (H, W, 3)
        atomic_write(self.samples / f"step_{record['step']:06d}.png", png_bytes(pixels))
        if writer is not None:
            writer.add_image("gan_lab", pixels, record["step"], dataformats="HWC")
        return figures

    def finish(self) -> Path | None:
        """samples/training.gif: every frame of the run, in step order."""
        from training.plots import write_animation

        return write_animation(sorted(self.samples.glob("step_*.png")), self.samples / GIF_NAME,
                               frame_ms=GIF_FRAME_MS)


def _curve_point(record: dict) -> dict:
    return {key: record[key] for key in CURVE_KEYS if key in record}
