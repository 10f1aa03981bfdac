"""The evaluation: `Evaluator` prepares everything real once (held-out and floor
features in both feature networks, the floors) and then measures generators against
it; `PeriodicEvaluator` is its cheap form for the training loop; `evaluate` measures one
generator with everything that applies; `selection_score` is what `best.pt` minimises.
See the package docstring for the figures.

Figures in the second feature network carry a `2` after their name (`fd2`, `kid2`,
`precision2`, ...), so the first network's keys mean what they always meant.
"""

from __future__ import annotations

import os
import time

import torch
from torch import nn

from models.card import ModelCard
from training.evaluate.encoder import describe as describe_encoder
from training.evaluate.encoder import load_encoder
from training.evaluate.errors import EvaluationError
from training.evaluate.features import (
    FEATURE_DIM,
    FEATURE_NETWORKS,
    INCEPTION_HELP,
    RealData,
    extract,
    inception_features,
    inception_network,
    load_classifier,
    shrink,
    stack,
)
from training.evaluate.metrics import (
    PRDC_K,
    coverage,
    frechet_distance,
    kernel_distance,
    kernel_gamma,
    median_nn_distance,
    prdc,
)
from training.evaluate.sources import draw_samples, open_for_evaluation
from training.evaluate.toys import TOY_EVALUATION_SAMPLES, toy_figures

METRICS = ("fd", "kid", "prdc", "coverage", "modes", "nn", "inception")
SPACES = ("", "2")  # key suffixes: the first feature network, the second
IMAGE_EVALUATION_SAMPLES = 1000
# The first sample seed of the training loop's evaluations: best.pt is chosen on samples
# of seeds of its own, so that the figures then reported of it (seeds 0..N-1: `dcgan
# evaluate`, the card) are not the ones it was picked by. A multiple of 10: a conditional
# generator's labels (seed % classes) start at 0 as in every other evaluation.
SELECTION_SEEDS = 10_000_000


# --- the evaluation -----------------------------------------------------------------------

def choose_metrics(metrics, real: RealData, inception_weights: str | None,
                   periodic: bool = False) -> tuple[str, ...]:
    """The metrics to compute: all that apply when `metrics` is None; else checked."""
    if metrics is None:
        # KID's subsets cost seconds on a CPU; PRDC's k-NN balls a fraction of one
        chosen = ["fd", "prdc"] if periodic else ["fd", "kid", "prdc"]
        if real.points:
            chosen.append("modes")
        elif real.num_classes:
            chosen.append("coverage")
        if not real.points and not periodic:
            chosen += ["nn"] + (["inception"] if inception_weights else [])
        return tuple(chosen)
    if isinstance(metrics, str):
        metrics = metrics.split(",")
    chosen = []
    for name in (m.strip().lower() for m in metrics if m.strip()):
        if name not in METRICS:
            raise EvaluationError(f"unknown metric {name!r}; choose from: {', '.join(METRICS)}")
        if name == "coverage" and real.points:
            name = "modes"  # the toys' coverage is the PacGAN figures
        if name == "modes" and not real.points:
            raise EvaluationError(f"metric modes is for the 2-D toys (ring, grid); {real.name} "
                                  "holds images: use coverage")
        if name in ("nn", "inception") and real.points:
            raise EvaluationError(f"metric {name} compares images; {real.name} holds 2-D points")
        if name == "coverage" and not real.num_classes:
            raise EvaluationError(f"metric coverage needs a labelled dataset; {real.name} has no "
                                  "labels (use fd, kid or nn)")
        if name == "inception" and not inception_weights:
            raise EvaluationError(INCEPTION_HELP)
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise EvaluationError(f"no metric asked for; choose from: {', '.join(METRICS)}")
    return tuple(chosen)


class Evaluator:
    """Quality of generators against one dataset. Everything real (held-out and floor
    features in both feature networks, the floors) is prepared once here; each call
    only samples the generator and compares."""

    def __init__(self, dataset: str, *, image_size: int = 32, nc: int | None = 1,
                 num_classes: int = 0, root: str | None = None, num_samples: int | None = None,
                 metrics=None, device: str = "cpu", inception_weights: str | None = None,
                 strict: bool = True, periodic: bool = False, seed: int = 0,
                 prdc_k: int = PRDC_K):
        from training.data import dataset_info

        try:
            nc = nc or dataset_info(dataset).nc or 1
        except ValueError as exc:
            raise EvaluationError(str(exc)) from None
        self.real = real = RealData(dataset, image_size, nc, root, seed)
        self.metrics = choose_metrics(metrics, real, inception_weights, periodic)
        self.num_classes, self.device, self.prdc_k = num_classes, device, prdc_k
        available = min(len(real.held_out), len(real.train))
        count = num_samples or (TOY_EVALUATION_SAMPLES if real.points else IMAGE_EVALUATION_SAMPLES)
        if count > available:
            if strict and num_samples:
                raise EvaluationError(
                    f"num-samples {count} is more than {dataset} can compare against: it has "
                    f"{len(real.held_out)} held-out and {len(real.train)} train samples; use at most {available}")
            count = available
        minimum = (2 if real.points else FEATURE_DIM) + 1
        if count < minimum:
            dim = 2 if real.points else FEATURE_DIM
            raise EvaluationError(
                f"num-samples {count} is too few: a {dim}x{dim} feature covariance needs at least "
                f"{minimum} samples (1000 or more give figures worth comparing)")
        if "prdc" in self.metrics and not 1 <= prdc_k < count:
            raise EvaluationError(f"prdc-k must be from 1 to {count - 1} (the sample count less "
                                  f"one), got {prdc_k}")
        self.num_samples = count
        # The feature networks, one per key suffix of SPACES: the 2-D toys are their own
        # features (one space); unlabelled images keep one untrained CNN (see features.py).
        self.networks: list = [None]
        self.accuracies: list = [None]
        self.encoder: dict | None = None  # what the unlabelled data's feature network is
        if not real.points and real.num_classes:
            loaded = [load_classifier(dataset, image_size, nc, root, real, network)
                      for network in FEATURE_NETWORKS]
            self.networks = [network.to(device) for network, _ in loaded]
            self.accuracies = [accuracy for _, accuracy in loaded]
        elif not real.points:  # no labels: one feature space, learned without them
            encoder, self.encoder = load_encoder(dataset, image_size, nc, real.content_key,
                                                 real.train, real.held_out)
            self.networks = [encoder.to(device)]
        self.classifier, self.accuracy = self.networks[0], self.accuracies[0]
        self._class_floor = None  # per network and class, made on first need (class_figures)
        self.reference = real.held_out[:count]  # held_out is already in a seeded random order
        floor_rows = torch.randperm(len(real.train), generator=torch.Generator().manual_seed(seed))[:count]
        floor = real.train[floor_rows]
        extracted = [extract(network, self.reference) for network in self.networks]
        self.ref_features = [features for features, _ in extracted]
        self.ref_probs = extracted[0][1]
        self.inception = self.ref_inception = floor_inception = None
        if "inception" in self.metrics:
            self.inception = inception_network(inception_weights, device)
            full_reference, _ = stack(real.held_set, real.held_rows[:count], full=True)
            full_floor, _ = stack(real.train_set, [real.train_rows[i] for i in floor_rows], full=True)
            self.ref_inception = inception_features(self.inception, full_reference)
            floor_inception = inception_features(self.inception, full_floor)
        self.floor = self.figures(floor, self.features(floor), floor_inception)
        if "nn" in self.metrics:  # held-out real to train: what "not memorised" looks like
            self.floor["nn_distance"] = median_nn_distance(self.reference, real.train)
        self.notes = {
            "dataset": dataset, "num_samples": count,
            "reference": f"{count} generated vs {count} held-out real ({real.split_note}); floor: "
                         f"{count} train {'points' if real.points else 'images'} vs the same held-out ones",
            "feature_space": self.describe_features(image_size, nc, 0),
            "classifier_accuracy": self.accuracy,
        }
        if self.encoder is not None:
            self.notes["encoder"] = self.encoder
        if len(self.networks) > 1:
            self.notes.update(feature_space2=self.describe_features(image_size, nc, 1),
                              classifier2_accuracy=self.accuracies[1])
        if "prdc" in self.metrics:
            self.notes.update(prdc_k=prdc_k, prdc_samples={"generated": count, "real": count})

    def describe_features(self, image_size: int, nc: int, index: int) -> str:
        if self.real.points:
            return "the 2-D points themselves"
        where = f"{self.real.name} at {image_size}px, {nc} channel{'s' if nc > 1 else ''}"
        if self.encoder is not None:
            return describe_encoder(self.encoder, where) + " (no labels: one network)"
        network = FEATURE_NETWORKS[index]
        return (f"penultimate layer ({FEATURE_DIM}) of {network.description}, seed {network.seed}, "
                f"trained on the train split of {where}; held-out accuracy {self.accuracies[index]:.1%}")

    def features(self, samples: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(features, class probabilities) of samples in each feature network."""
        return [extract(network, samples) for network in self.networks]

    def figures(self, samples: torch.Tensor, features: list, inception: torch.Tensor | None,
                only: tuple[str, ...] | None = None) -> dict:
        """Every chosen figure (or those of `only`) of one sample set against the held-out
        reference; `features` as `self.features` gives them."""
        metrics = self.metrics if only is None else [m for m in self.metrics if m in only]
        out: dict = {}
        for suffix, reference, (feats, _) in zip(SPACES, self.ref_features, features):
            if "fd" in metrics:
                out[f"fd{suffix}"] = frechet_distance(reference, feats)
            if "kid" in metrics:
                out[f"kid{suffix}"], out[f"kid{suffix}_std"] = kernel_distance(
                    reference, feats, kernel_gamma(reference))
            if "prdc" in metrics:
                out.update({f"{key}{suffix}": value
                            for key, value in prdc(reference, feats, self.prdc_k).items()})
        probs = features[0][1]
        if "coverage" in metrics:
            out.update(coverage(probs, self.ref_probs))
        if "modes" in metrics:
            from training.data import toy_modes

            out.update(toy_figures(samples.numpy(), *toy_modes(self.real.name)))
        if "nn" in metrics:
            out["nn_distance"] = median_nn_distance(samples, self.real.train)
        if inception is not None and "inception" in metrics:
            out["inception_fd"] = frechet_distance(self.ref_inception, inception)
            out["inception_kid"], out["inception_kid_std"] = kernel_distance(
                self.ref_inception, inception, 1.0 / self.ref_inception.shape[1])
        return out

    def __call__(self, generator, truncation: float | None = None,
                 only: tuple[str, ...] | None = None, first_seed: int = 0) -> dict:
        """Figures of a generator (an nn.Module, anything `open_for_evaluation` opens), each
        with its floor and, for FD and NN, the ratio to it. `truncation` draws the latents
        truncated at that |z|; `only` limits the figures to those metrics; `first_seed`
        moves the block of sample seeds (bench/bench_seed_blocks.py)."""
        if isinstance(generator, nn.Module):
            config = getattr(generator, "module", generator).config  # DDP wraps the module
            card = ModelCard(model={"nz": config.nz,
                                    "num_classes": getattr(config, "num_classes", self.num_classes)})
            generator = (generator, card)
        source, _ = open_for_evaluation(generator, self.device)
        samples, labels = draw_samples(source, self.num_samples, truncation, first_seed)
        full = samples
        if samples.ndim == 4:
            samples = shrink(samples)
        if samples.shape[1:] != self.reference.shape[1:]:
            raise EvaluationError(
                f"the model makes samples of shape {tuple(full.shape[1:])}; {self.real.name} "
                f"here has {tuple(self.reference.shape[1:])}")
        features = self.features(samples)
        inception = None
        if self.inception is not None and (only is None or "inception" in only):
            inception = inception_features(self.inception, full)
        figures = self.figures(samples, features, inception, only)
        probs = features[0][1]
        if labels is not None and probs is not None and source.card.num_classes == probs.shape[1]:
            figures["label_accuracy"] = float((probs.argmax(1).numpy() == labels).mean())
            if "fd" in self.metrics and (only is None or "fd" in only):
                figures.update(self.class_figures(features, labels))
        return {**self.notes, **with_floors(figures, self.floor)}

    def class_figures(self, features: list, labels) -> dict:
        """Within each class of a conditional generator: FD between the samples asked for
        class c and the held-out real digits of class c, in both feature networks, with its
        own floor (as many train digits of class c against the same held-out ones) and the
        ratio; then the mean and the worst ratio over classes. Each class's three sets have
        the same size (the smaller of the samples asked for c and the held-out digits of c),
        so the floor carries the same small-sample bias as the figure."""
        import numpy as np

        held = np.asarray(self.real.held_out_labels[:self.num_samples])
        labels = np.asarray(labels)
        out: dict = {}
        for suffix, reference, (feats, _), floor_feats in zip(
                SPACES, self.ref_features, features, self._class_floor_features()):
            ratios, fds, floors = [], [], []
            for c in range(self.real.num_classes):
                fake_rows = np.flatnonzero(labels == c)
                real_rows = np.flatnonzero(held == c)
                size = min(len(fake_rows), len(real_rows), len(floor_feats[c]))
                fd = floor = None
                if size > FEATURE_DIM:  # else too few for a covariance: no figure for this class
                    real = reference[real_rows[:size]]
                    fd = frechet_distance(real, feats[fake_rows[:size]])
                    floor = frechet_distance(real, floor_feats[c][:size])
                fds.append(fd)
                floors.append(floor)
                ratios.append(fd / floor if fd is not None and floor > 0 else None)
            known = [r for r in ratios if r is not None]
            out[f"class_fd{suffix}"] = fds
            out[f"class_fd{suffix}_floor"] = floors
            out[f"class_fd{suffix}_ratio"] = ratios
            out[f"class_fd{suffix}_ratio_mean"] = float(np.mean(known)) if known else None
            out[f"class_fd{suffix}_ratio_max"] = float(np.max(known)) if known else None
        return out

    def _class_floor_features(self) -> list[list[torch.Tensor]]:
        """Per feature network, per class: features of the train digits of that class
        (as many as the held-out digits of the class), extracted once."""
        if self._class_floor is None:
            import numpy as np

            held = np.asarray(self.real.held_out_labels[:self.num_samples])
            train = np.asarray(self.real.train_labels)
            rng = np.random.default_rng(1)
            per_class = []
            for c in range(self.real.num_classes):
                rows = rng.permutation(np.flatnonzero(train == c))[: int((held == c).sum())]
                per_class.append(self.real.train[torch.from_numpy(rows)])
            self._class_floor = [[extract(network, images)[0] for images in per_class]
                                 for network in self.networks]
        return self._class_floor


RATIOS = {"fd": "fd_ratio", "fd2": "fd2_ratio", "inception_fd": "inception_fd_ratio",
          "nn_distance": "nn_ratio"}
NO_FLOOR = ("class_histogram", "num_classes", "num_modes", "kid_std", "kid2_std",
            "inception_kid_std")


def with_floors(figures: dict, floor: dict) -> dict:
    """Each figure, then its floor (`<name>_floor`) and for distances the ratio; then
    `fd_ratio_mean` (see `selection_score`) when both feature networks measured FD."""
    out: dict = {}
    for key, value in figures.items():
        out[key] = value
        if key in floor and key not in NO_FLOOR:
            out[f"{key}_floor"] = floor[key]
        if key in RATIOS:
            out[RATIOS[key]] = value / floor[key] if floor[key] > 0 else None
    if "class_histogram" in floor:
        out["class_histogram_floor"] = floor["class_histogram"]
    if out.get("fd_ratio") is not None and out.get("fd2_ratio") is not None:
        out["fd_ratio_mean"] = (out["fd_ratio"] + out["fd2_ratio"]) / 2
    return out


def selection_score(figures: dict) -> float:
    """What `best.pt` minimises during training (lower is better): the mean of the FD
    ratios in the two feature networks. Ratios, because the two networks' raw FDs are in
    units of their own (each ratio is 1 for real data); both, because a generator can
    match the quirks of one network's features and not the digits (the bundled one: 1.3
    in the first, near 2 in the second), and a checkpoint picked by one instrument is
    tuned to it; the mean rather than the worse of the two, so progress seen by either
    counts. With one feature space (unlabelled data, 2-D toys) it is that FD ratio; with
    no floor, the FD itself."""
    for key in ("fd_ratio_mean", "fd_ratio", "fd"):
        if figures.get(key) is not None:
            return float(figures[key])
    return float("inf")


class PeriodicEvaluator(Evaluator):
    """What the training loop calls every N steps: `num_samples` from fixed seeds (from
    SELECTION_SEEDS on), FD with its floor, and coverage (or the toys' modes); no KID or
    nearest-neighbour search unless `metrics` asks.
    Held-out data smaller than `num_samples` caps it rather than failing."""

    def __init__(self, dataset: str, image_size: int = 32, nc: int | None = 1,
                 num_classes: int = 0, root: str | None = None, num_samples: int = 500,
                 device: str = "cpu", metrics=None):
        super().__init__(dataset, image_size=image_size, nc=nc, num_classes=num_classes,
                         root=root, num_samples=num_samples, metrics=metrics, device=device,
                         strict=False, periodic=True)

    def __call__(self, generator, truncation: float | None = None,
                 only: tuple[str, ...] | None = None, first_seed: int = SELECTION_SEEDS) -> dict:
        figures = super().__call__(generator, truncation, only, first_seed)
        figures["sample_seeds"] = f"{first_seed}..{first_seed + self.num_samples - 1}"
        return figures


def check_shapes(card: ModelCard, dataset: str) -> None:
    """One clear line when the model's samples cannot be compared with the dataset's."""
    from training.data import dataset_info

    try:
        info = dataset_info(dataset)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
    shape = card.output_shape
    if info.kind == "points":
        if shape != (2,):
            raise EvaluationError(f"the model makes samples of shape {shape}, but {dataset} "
                                  "holds 2-D points")
        return
    if len(shape) != 3 or shape[1] != shape[2]:
        raise EvaluationError(f"the model makes samples of shape {shape}, but {dataset} holds "
                              "square images (channels, size, size)")
    trained_on = card.dataset.get("name")
    if dataset not in (trained_on, "folder") and shape[0] != info.nc:
        hint = f" ({trained_on})" if trained_on else ""
        raise EvaluationError(
            f"the model makes {shape[0]}-channel images but {dataset} has {info.nc}-channel "
            f"images; evaluate it on the dataset it was trained on{hint}")


def evaluator_for(card: ModelCard, dataset: str | None = None, **options) -> Evaluator:
    """The Evaluator of a model against `dataset` (the card's by default), sized from the
    card's output shape; `options` go to Evaluator. One clear line when they do not fit."""
    dataset = dataset or card.dataset.get("name")
    if not dataset:
        raise EvaluationError("the model card names no dataset: pass --dataset")
    check_shapes(card, dataset)
    shape = card.output_shape
    size, nc = (shape[1], shape[0]) if len(shape) == 3 else (32, None)
    return Evaluator(dataset, image_size=size, nc=nc, num_classes=card.num_classes, **options)


def evaluate(source, *, dataset: str | None = None, num_samples: int | None = None,
             metrics=None, device: str = "cpu", inception_weights: str | None = None,
             root: str | None = None, prdc_k: int = PRDC_K, truncations=None) -> dict:
    """Every figure of one generator: `source` is a checkpoint file or run directory, an
    ONNX file, a (generator module, card) pair or a Source. `dataset` defaults to the card's;
    `num_samples` to 1,000 images (capped by the held-out set) or 2,500 toy points.
    `root` defaults, for a run directory or checkpoint, to the data folder the run was
    trained on (`training.config.run_data_root`).
    `truncations` (values or text such as "0.5,1,none") adds the truncation curve under
    `truncation` (see `training.evaluate.truncation`)."""
    started = time.perf_counter()
    if isinstance(source, (str, os.PathLike)):  # a run remembers the data it was trained on
        from training.config import run_data_root

        try:
            root = run_data_root(source, dataset, root)
        except (ValueError, FileNotFoundError) as exc:
            raise EvaluationError(str(exc)) from None
    source, description = open_for_evaluation(source, device)
    card = source.card
    if truncations is not None:
        from training.evaluate.truncation import parse_truncations, truncation_curve

        truncations = parse_truncations(truncations)  # a typo fails before any work
    evaluator = evaluator_for(card, dataset, root=root, num_samples=num_samples, metrics=metrics,
                              device=device, inception_weights=inception_weights, prdc_k=prdc_k)
    if truncations is not None and not {"fd", "prdc"} <= set(evaluator.metrics):
        raise EvaluationError("the truncation curve needs the metrics fd and prdc")
    figures = evaluator(source)
    if truncations is not None:
        figures["truncation"] = truncation_curve(evaluator, source, truncations)
    return {"source": description, "model": card.name, "step": card.step,
            "metrics": list(evaluator.metrics), **figures,
            "seconds": round(time.perf_counter() - started, 1)}
