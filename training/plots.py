"""Matplotlib drawings of numbers computed elsewhere: GAN Lab's frame of a 2-D run
(a GameView, computed by training.ganlab) and the curves of a training report.

Only the object-oriented API (Figure and its Agg canvas, no pyplot): nothing global, so
drawing in a training process cannot open a window or disturb another figure. Colours
follow GAN Lab: green for real, purple for generated, pink for the generator's gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

REAL = "#1b9e3e"
FAKE = "#7b3294"
ARROW = "#e7298a"
VERDICT_MAP = "PRGn"  # purple (0, likely fake) through white to green (1, likely real)
BACKGROUND_ALPHA = 0.6
ARROW_FRACTION = 0.07  # the longest arrow, as a share of the picture's side


@dataclass
class GameView:
    """One frame's numbers, as training.ganlab.game_view computes them (plain arrays: a
    figure script draws saved ones without torch); x along axis 1 of `verdict` and
    `density`, y along axis 0."""

    step: int
    dataset: str
    loss: str
    edges: np.ndarray  # (C+1,) cell edges along either axis
    verdict: np.ndarray  # (C, C) D's verdict at cell centres, in [0, 1]; 1: real
    real: np.ndarray  # (R, 2) real points shown
    fake: np.ndarray  # (F, 2) generated points shown
    arrows: np.ndarray  # (F, 2) -grad of G's loss at each generated point
    mesh: np.ndarray  # (M, M, 2) images of the noise grid's vertices
    density: np.ndarray  # (M-1, M-1) generated density in each mesh cell
    mesh_note: str
    grid_kl: float
    grid_js: float

    @property
    def extent(self) -> tuple[float, float, float, float]:
        return (self.edges[0], self.edges[-1], self.edges[0], self.edges[-1])


def new_figure(width: float, height: float, dpi: int = 100, layout: str | None = "constrained"):
    """A figure on an Agg canvas; `layout=None` for fixed margins, which draw faster."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def figure_pixels(figure) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a drawn figure."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[:, :, :3].copy()


def png_bytes(pixels: np.ndarray) -> bytes:
    from models.generation.pictures import encode_png

    return encode_png(np.ascontiguousarray(pixels))


def figure_png(figure) -> bytes:
    return png_bytes(figure_pixels(figure))


def draw_game(ax, view) -> dict:
    """GAN Lab's picture of `view` (a GameView) on `ax`; returns the
    artists by name: background, mesh, real, fake, arrows."""
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_rgba

    artists = {}
    # one colour per grid cell: D's verdict there; row 0 of `verdict` is the lowest y
    artists["background"] = ax.imshow(view.verdict, origin="lower", extent=view.extent,
                                      cmap=VERDICT_MAP, vmin=0.0, vmax=1.0,
                                      alpha=BACKGROUND_ALPHA, interpolation="nearest")
    mesh = view.mesh
    quads = np.stack([mesh[:-1, :-1], mesh[:-1, 1:], mesh[1:, 1:], mesh[1:, :-1]], axis=2)
    quads = quads.reshape(-1, 4, 2)  # (cells, 4 corners, xy)
    finite = np.isfinite(view.density).ravel() & np.isfinite(quads).all(axis=(1, 2))
    reference = np.quantile(view.density.ravel()[finite], 0.9) if finite.any() else 1.0
    opacity = np.clip(view.density.ravel()[finite] / max(reference, 1e-12), 0.0, 1.0)
    faces = np.tile(to_rgba(FAKE), (int(finite.sum()), 1))
    faces[:, 3] = 0.45 * opacity
    artists["mesh"] = ax.add_collection(PolyCollection(
        quads[finite], facecolors=faces, edgecolors=to_rgba(FAKE, 0.3), linewidths=0.4))
    artists["fake"] = ax.scatter(*view.fake.T, s=5, color=FAKE, label="generated", zorder=3)
    artists["real"] = ax.scatter(*view.real.T, s=7, color=REAL, edgecolors="white",
                                 linewidths=0.3, label="real", zorder=3)
    # directions are the data's; lengths share one scale, the longest a fixed share of the side
    side = view.edges[-1] - view.edges[0]
    longest = float(np.nanmax(np.linalg.norm(view.arrows, axis=1))) if len(view.arrows) else 0.0
    scale = longest / (ARROW_FRACTION * side) if longest > 0 else 1.0
    artists["arrows"] = ax.quiver(*view.fake.T, *view.arrows.T, color=ARROW, angles="xy",
                                  scale_units="xy", scale=scale, width=0.003, zorder=4)
    ax.set_xlim(view.edges[0], view.edges[-1])
    ax.set_ylim(view.edges[0], view.edges[-1])
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)
    ax.legend(loc="upper right", fontsize=7, markerscale=2, framealpha=0.8)
    return artists


def game_caption(view) -> str:
    verdict = ("sigmoid(critic - midpoint of its means)" if view.loss in ("wgan", "wgan-gp")
               else "D(x)")
    lines = [f"background: {verdict}, green real, purple fake",
             "mesh: G's manifold, opacity = density; pink: -grad of G's loss"]
    if view.mesh_note:
        lines.append(view.mesh_note)
    return "\n".join(lines)


def draw_curves(loss_ax, divergence_ax, history: list[dict], total_steps: int,
                step: int | None = None) -> None:
    """The losses, and the grid KL and JS, over the steps of `history` (dicts with step,
    d_loss, g_loss and, on frame steps, grid_kl, grid_js)."""
    steps = [r["step"] for r in history]
    loss_ax.plot(steps, [r.get("d_loss", np.nan) for r in history], label="D loss", color="#444444", lw=1)
    loss_ax.plot(steps, [r.get("g_loss", np.nan) for r in history], label="G loss", color=FAKE, lw=1)
    framed = [r for r in history if "grid_kl" in r]
    for key, label, colour in (("grid_kl", "KL(real || generated)", "#d95f02"),
                               ("grid_js", "JS", "#1f78b4")):
        divergence_ax.plot([r["step"] for r in framed], [r[key] for r in framed], marker="o",
                           markersize=3, lw=1, label=label, color=colour)
    for ax, title in ((loss_ax, "losses"), (divergence_ax, "divergences on the grid")):
        ax.set_xlim(0, max(total_steps, 1))
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if step is not None:
            ax.axvline(step, color="#999999", lw=0.8)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper right")
    divergence_ax.set_ylim(bottom=0)
    divergence_ax.set_xlabel("step", fontsize=8)


def game_frame(view, history: list[dict], total_steps: int) -> np.ndarray:
    """One frame: GAN Lab's picture on the left, the curves to this step on the right."""
    figure = new_figure(9.6, 4.8, layout=None)  # fixed margins: frames must stay cheap
    grid = figure.add_gridspec(2, 2, width_ratios=[1.05, 1], left=0.04, right=0.98, bottom=0.13,
                               top=0.94, wspace=0.12, hspace=0.35)
    game_ax = figure.add_subplot(grid[:, 0])
    draw_game(game_ax, view)
    game_ax.set_title(f"{view.dataset} · {view.loss} · step {view.step}", fontsize=10)
    game_ax.set_xlabel(game_caption(view), fontsize=7)
    draw_curves(figure.add_subplot(grid[0, 1]), figure.add_subplot(grid[1, 1]), history,
                total_steps, step=view.step)
    return figure_pixels(figure)


def write_animation(frames: list[Path], out: Path, frame_ms: int = 250) -> Path | None:
    """An animated GIF of the PNG `frames` (those of the first one's size), or None when
    there are none. Each frame gets its own octree palette: it keeps the few pixels of
    a rare colour (a legend's marker, a curve) that a median cut merges into a common one."""
    if not frames:
        return None
    import io

    from PIL import Image

    from models.generation import atomic_write

    pictures = []
    for path in frames:
        with Image.open(path) as image:
            pictures.append(image.convert("RGB"))
    pictures = [p for p in pictures if p.size == pictures[0].size]
    palettes = [p.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
                for p in pictures]
    buffer = io.BytesIO()
    palettes[0].save(buffer, format="GIF", save_all=True, append_images=palettes[1:],
                     duration=frame_ms, loop=0)
    return atomic_write(out, buffer.getvalue())
