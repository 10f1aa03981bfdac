"""`dcgan train-encoder`, `directions`, `project`, `edit` and `combine`: the latent-space
commands (registered on the app in training/cli.py).

`project`, `edit` and `combine` go through the generation layer as the service does
(reading pictures, the encoder and directions sidecars, the torch-free search, plans,
encoding), with the HTTP API's defaults, so on the same file they give what
POST /project, /edit and /combine give: the same latents, the same bytes.
`project --refine N` goes further than the service can: N steps of Adam on the latent
through the torch generator (rebuilt from the ONNX file's weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

out = Console()
err = Console(stderr=True)


def _open(model: str | None):
    """(OnnxGenerator, its LatentSpace) of a path or model-store tag (None: what the
    service serves by default)."""
    from models.generation import OnnxGenerator, open_latent_space, resolve_model
    from models.generation.onnx_generator import cpu_threads

    path, version = resolve_model(model, setting="--model")
    generator = OnnxGenerator(path, device="cpu", threads=cpu_threads(), version=version)
    space = open_latent_space(path, generator.card, threads=cpu_threads())
    for line in space.problems:
        err.print(f"warning: {line}", highlight=False)
    return generator, space


def _end_point(seed: int | None, latent_file: Path | None, option: str):
    if (seed is None) == (latent_file is None):
        raise ValueError(f"give either {option} SEED or {option}-latent FILE")
    if seed is not None:
        return seed
    data = json.loads(latent_file.read_text())
    if isinstance(data, dict) and "latents" in data:  # the output of `dcgan project --json`
        data = data["latents"][0]
    return data


def train_encoder_command(
    source: Path = typer.Argument(..., help="An exported ONNX generator, a run directory or a checkpoint."),
    steps: int | None = typer.Option(None, help="Optimiser steps [1000]."),
    batch_size: int | None = typer.Option(None, help="Real images (and generated pairs) per step [32]."),
    feature_weight: float | None = typer.Option(None, help="Weight of the classifier-feature reconstruction loss [1]."),
    threads: int | None = typer.Option(None, help="CPU threads for torch [torch's default]."),
    seed: int | None = typer.Option(None, help="Random seed [0]."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train an encoder (image -> latent) for a generator. For an ONNX file it is written
    beside it as NAME.encoder.onnx (what the service and `dcgan project` use); for a run,
    as RUN/encoder.pt, which `dcgan export` then carries beside the exported file."""
    import logging
    from dataclasses import fields

    from training.encoder import (
        EncoderConfig,
        export_encoder,
        save_encoder,
        torch_generator,
        train_encoder,
    )

    options = {"steps": steps, "batch_size": batch_size, "feature_weight": feature_weight,
               "threads": threads, "seed": seed}
    config = EncoderConfig(**{f.name: options[f.name] for f in fields(EncoderConfig)
                              if options.get(f.name) is not None})
    if config.steps < 1 or config.batch_size < 1:
        raise ValueError("--steps and --batch-size must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    generator, card, onnx_path = torch_generator(source)
    encoder, report = train_encoder(generator, card, config, progress=progress)
    losses = ", ".join(f"{k} {v:.4f}" for k, v in report["losses"].items())
    if onnx_path is not None:
        path, error = export_encoder(encoder, card, onnx_path, report)
        out.print(f"wrote {path} after {report['seconds']:.0f} s ({losses}); "
                  f"max |onnxruntime - torch| = {error:.1e}", highlight=False)
    else:
        run = source if source.is_dir() else source.parent
        path = save_encoder(run / "encoder.pt", encoder, report)
        out.print(f"wrote {path} after {report['seconds']:.0f} s ({losses}); `dcgan export "
                  f"{run}` carries it beside the ONNX file", highlight=False)


def directions_command(
    model: Path = typer.Argument(..., help="An exported ONNX generator."),
    samples: int = typer.Option(20_000, help="Samples the class means are chosen from."),
) -> None:
    """Compute a generator's edit directions (SeFa, class means) into NAME.latent.json
    beside it, for an exported file (`dcgan export` does this itself)."""
    from models.generation import OnnxGenerator
    from training.directions import compute_directions, write_directions
    from training.encoder import generator_from_onnx

    if samples < 10:
        raise ValueError(f"--samples must be at least 10, got {samples}")
    generator, card = generator_from_onnx(model)
    directions = compute_directions(generator, card, OnnxGenerator(model, device="cpu"), samples)
    path = write_directions(directions, model)
    classes = (f", class means of {len(directions.class_counts)} classes"
               if directions.class_means is not None else "")
    out.print(f"wrote {path} ({len(directions.sefa)} SeFa directions{classes})")


def project_command(
    images: list[Path] = typer.Argument(..., help="PNG or JPEG pictures."),
    model: str | None = typer.Option(None, help="An ONNX file or model-store tag [what the service serves]."),
    search: int = typer.Option(0, help="Steps of the service's torch-free search after the encoder."),
    refine: int = typer.Option(0, help="Then steps of gradient descent on the latent through the torch generator."),
    feature_weight: float = typer.Option(1.0, help="--refine: weight of the classifier-feature distance beside the pixels'."),
    fit: str = typer.Option("auto", help="auto, digit or crop (see POST /project)."),
    invert: str = typer.Option("auto", help="auto, yes or no."),
    out_dir: Path | None = typer.Option(None, "--out", "-o", help="Folder for NAME.reconstruction.png per picture."),
    json_path: Path | None = typer.Option(None, "--json", help="Write latents and distances to this JSON file."),
) -> None:
    """Find the latent of each picture: the encoder's guess, refined on request; prints
    the reconstruction distance, saves the latents and reconstructions."""
    import numpy as np

    from models.generation import atomic_write, pixel_rms, png_images, read_image, search_latents
    from models.generation.latent_space import require_encoder

    if not 0 <= search <= 1000 or not 0 <= refine <= 10_000:
        raise ValueError("--search must be from 0 to 1000 and --refine from 0 to 10000")
    generator, space = _open(model)
    encoder = require_encoder(space)
    targets = []
    for image in images:
        try:
            targets.append(read_image(image.read_bytes(), generator.card, field=str(image),
                                      fit=fit, invert=invert))
        except OSError as exc:
            raise ValueError(f"{image}: {exc.strerror or exc}") from None
    targets = np.stack(targets)
    latents = encoder.encode(targets)
    before = pixel_rms(generator.generate(latents), targets)
    if search:
        latents, _ = search_latents(generator.generate, latents, targets, search)
    if refine:
        from training.encoder import generator_from_onnx, refine_latents

        module, card = generator_from_onnx(generator.path)
        latents = refine_latents(module, card, latents, targets, refine, feature_weight=feature_weight)
    made = generator.generate(latents)
    distances = pixel_rms(made, targets)
    for image, first, last in zip(images, before, distances):
        out.print(f"{image}: pixel RMS {first:.4f}" + (f" -> {last:.4f}" if search or refine else ""),
                  highlight=False)
    if out_dir is not None:
        for image, png in zip(images, png_images(made)):
            atomic_write(out_dir / f"{image.stem}.reconstruction.png", png)
    body = {"latents": latents.tolist(), "distances": distances.tolist(),
            "search": {"steps": search, "distances_before": before.tolist()}, "refine": refine,
            "images": [str(p) for p in images]}
    if json_path is not None:
        atomic_write(json_path, json.dumps(body).encode())
    elif out_dir is None:
        out.print_json(json.dumps({"latents": body["latents"]}))


def _parse_floats(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{option} must be numbers separated by commas, got {text!r}") from None


def edit_command(
    start: int | None = typer.Option(None, help="Seed of the image to edit."),
    start_latent: Path | None = typer.Option(None, help="Or a JSON latent (a list, or `dcgan project --json` output)."),
    direction: str | None = typer.Option(None, help="A direction by name (sefa0, sefa1, ...)."),
    from_class: int | None = typer.Option(None, help="Or move from this class..."),
    to_class: int | None = typer.Option(None, help="...to this one (by their mean latents)."),
    strengths: str = typer.Option("-3,-1.5,0,1.5,3", help="Comma-separated: one frame per strength."),
    model: str | None = typer.Option(None, help="An ONNX file or model-store tag [what the service serves]."),
    out_path: Path = typer.Option(Path("edit.png"), "--out", "-o", help="A .png strip or an animated .gif."),
    truncation: float | None = typer.Option(None, help="Redraw the seed's latent entries beyond this |z|."),
    label: int | None = typer.Option(None, help="Class, for conditional models."),
) -> None:
    """Move an image along a direction: the bytes of POST /edit with format png or gif."""
    from models.generation import animated_gif, atomic_write, plan_edit, strip_png
    from models.generation.latent_space import require_directions

    picture = out_path.suffix.lower().lstrip(".")
    if picture not in ("png", "gif"):
        raise ValueError(f"--out must end in .png or .gif, got {out_path}")
    amounts = _parse_floats(strengths, "--strengths")
    generator, space = _open(model)
    plan = plan_edit(generator.card, require_directions(space), _end_point(start, start_latent, "--start"),
                     strengths=amounts, direction=direction, from_class=from_class,
                     to_class=to_class, truncation=truncation, label=label, format=picture)
    images = generator.generate(plan.latents, plan.labels)
    atomic_write(out_path, animated_gif(images) if picture == "gif" else strip_png(images))
    out.print(f"wrote {out_path} ({len(amounts)} frames)")


def combine_command(
    terms: list[str] = typer.Argument(..., help="SEED:WEIGHT or LATENT.json:WEIGHT, e.g. 1:1 2:-1 3:1."),
    model: str | None = typer.Option(None, help="An ONNX file or model-store tag [what the service serves]."),
    out_path: Path = typer.Option(Path("combined.png"), "--out", "-o", help="The PNG to write."),
    truncation: float | None = typer.Option(None, help="Redraw seeds' latent entries beyond this |z|."),
    label: int | None = typer.Option(None, help="Class, for conditional models."),
) -> None:
    """The image of a weighted sum of seeds and latents: the bytes of POST /combine with
    format png."""
    from models.generation import atomic_write, plan_combine, png_images

    parsed = []
    for term in terms:
        value, _, weight = term.rpartition(":")
        try:
            amount = float(weight) if value else 1.0
        except ValueError:
            raise ValueError(f"a term must be SEED:WEIGHT or FILE.json:WEIGHT, got {term!r}") from None
        value = value or term
        point = int(value) if value.isdigit() else _end_point(None, Path(value), "--term")
        parsed.append((point, amount))
    generator, _ = _open(model)
    plan = plan_combine(generator.card, parsed, truncation=truncation, label=label, format="png")
    atomic_write(out_path, png_images(generator.generate(plan.latents, plan.labels))[0])
    out.print(f"wrote {out_path} (a sum of {len(parsed)} terms)")


def register(app: typer.Typer, clean_errors) -> None:
    for name, command in (("train-encoder", train_encoder_command),
                          ("directions", directions_command), ("project", project_command),
                          ("edit", edit_command), ("combine", combine_command)):
        app.command(name)(clean_errors(command))
