"""Edit directions of a generator, computed at export (or for an exported file) and
written as its `.latent.json` sidecar (models.generation.latent_space).

- SeFa (Shen & Zhou 2021): the first layer maps z linearly, y = W z; the directions
  that change y most are the top eigenvectors of W^T W. As in the authors' code, W's
  columns are normalised to unit length first. For a class-conditional generator, W is
  the part of the first layer that reads z (not the label embedding).
- class means (labelled datasets, unconditional generators): the mean latent of
  PER_CLASS samples the evaluation classifier puts in each class, the DCGAN paper's
  averaging of latents, so that (mean b - mean a) added to a sample of class a moves it
  towards b. Which samples: among the CANDIDATES it is surest of (of seeds
  0..CLASS_SAMPLES-1), the deepest in the class's region of the latent space: those
  whose class survives most often when their latent is turned by TURN radians towards
  TURNS random latents (cos t z + sin t n, again a standard normal latent). A sample
  can be a sure 9 and still sit at the edge of the 9s, one turn away from a 4; the
  average of such edge samples points between classes. On both bundled unconditional
  generators the deepest 100 turned more class pairs at least 70% of the way than
  the surest 100 (BENCHMARKS.md, "The latent space"); earlier, all confident samples
  (p >= 0.9, ~700 per class) had given means of norm 1.7 that turned 43 of the 90.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.card import ModelCard
from models.generation.latent_space import Directions

SEFA_COUNT = 10
CLASS_SAMPLES = 20_000
PER_CLASS = 100
CANDIDATES = 1000  # per class, the surest, among which the PER_CLASS deepest are averaged
TURN = 0.5  # radians (29 degrees) a candidate's latent is turned towards a random one
TURNS = 8  # random turns per candidate
TURN_SEED = 0  # the random latents of the turns: the same for every run


def first_layer_weight(generator) -> np.ndarray:
    """W (out, nz) of the generator's first layer, for DCGAN and MLP generators."""
    import torch

    layer = next(m for m in generator.modules()
                 if isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.Linear)))
    weight = layer.weight.detach().float().cpu().numpy()
    nz = generator.config.nz
    if isinstance(layer, torch.nn.ConvTranspose2d):  # (in, out, k, k): in = nz [+ nz labels]
        return weight[:nz].reshape(nz, -1).T
    return weight[:, :nz]  # Linear: (out, in)


def sefa(weight: np.ndarray, count: int = SEFA_COUNT) -> tuple[np.ndarray, np.ndarray]:
    """(directions (count, nz) unit vectors, eigenvalues (count,)), largest first."""
    columns = weight / np.maximum(np.linalg.norm(weight, axis=0, keepdims=True), 1e-12)
    values, vectors = np.linalg.eigh(columns.T @ columns)  # ascending
    order = np.argsort(values)[::-1][:count]
    directions = vectors[:, order].T
    # an eigenvector's sign is arbitrary: fix it so the largest entry is positive
    signs = np.sign(directions[np.arange(len(directions)), np.abs(directions).argmax(axis=1)])
    return (directions * signs[:, None]).astype(np.float32), values[order]


def deepest_means(latents: np.ndarray, probabilities, per_class: int = PER_CLASS,
                  candidates: int = CANDIDATES, turns: int = TURNS) -> tuple[np.ndarray, list[int]]:
    """(means (K, nz), the samples averaged per class) of `latents`, which
    `probabilities(latents) -> (N, K)` classifies: per class, the mean of the
    `per_class` deepest of its `candidates` surest samples (module docstring)."""
    probs = probabilities(latents)
    predicted = probs.argmax(axis=1)
    num_classes, nz = probs.shape[1], latents.shape[1]
    chosen = []  # per class: the surest candidates, surest first
    for k in range(num_classes):
        rows = np.flatnonzero(predicted == k)
        chosen.append(rows[np.argsort(-probs[rows, k], kind="stable")[:candidates]])
    rows = np.concatenate(chosen)
    classes = predicted[rows]
    depth = np.zeros(len(rows))
    if turns and len(rows):
        rng = np.random.Generator(np.random.PCG64(TURN_SEED))
        for _ in range(turns):
            towards = rng.standard_normal((len(rows), nz)).astype(np.float32)
            turned = np.cos(TURN) * latents[rows] + np.sin(TURN) * towards
            depth += probabilities(turned.astype(np.float32))[np.arange(len(rows)), classes]
    means = np.zeros((num_classes, nz), np.float32)
    counts = []
    for k in range(num_classes):
        mine = rows[classes == k]
        # the deepest; ties (no turns) keep the surest first
        mine = mine[np.argsort(-depth[classes == k], kind="stable")[:per_class]]
        counts.append(int(len(mine)))
        if len(mine):
            means[k] = latents[mine].mean(axis=0)
    return means, counts


def class_means(source, card: ModelCard, samples: int = CLASS_SAMPLES,
                per_class: int = PER_CLASS, candidates: int = CANDIDATES,
                turns: int = TURNS) -> tuple[np.ndarray, list[int], dict]:
    """(means (K, nz), the samples averaged per class, notes) of the samples of seeds
    0..samples-1 as the evaluation classifier sees them (`deepest_means`)."""
    import torch

    from models.latent import latents_from_seeds
    from training.encoder import feature_network

    classifier, accuracy = feature_network(card)

    def probabilities(latents: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(latents), 500):
            images = torch.from_numpy(source.generate(latents[start:start + 500]))
            with torch.no_grad():
                out.append(classifier(images)[1].softmax(1).numpy())
        return np.concatenate(out)

    means, counts = deepest_means(latents_from_seeds(range(samples), card.nz), probabilities,
                                  per_class, candidates, turns)
    notes = {"class_samples": samples, "per_class": per_class, "candidates": candidates,
             "turns": turns, "turn_radians": TURN,
             "classifier_accuracy": accuracy, "seeds": f"0-{samples - 1}",
             "class_means": f"mean latent of the {per_class} deepest of the {candidates} samples "
                            "the evaluation classifier is surest belong to each class (depth: how "
                            f"often the class survives {turns} turns of the latent by {TURN} rad "
                            "towards random latents)"}
    return means, counts, notes


def compute_directions(generator, card: ModelCard, source=None,
                       samples: int = CLASS_SAMPLES, classes: bool = True) -> Directions:
    """SeFa always; class means when asked (`classes`), the dataset is labelled and the
    generator is not class-conditional (`source`: what generates samples, default the
    torch module)."""
    vectors, values = sefa(first_layer_weight(generator))
    notes = {"sefa": "top eigenvectors of W^T W, W = the first layer's weight on z with unit "
                     "columns (Shen & Zhou 2021)"}
    directions = Directions(vectors, values, notes=notes)
    labelled = int(card.dataset.get("num_classes") or 0) > 0
    if classes and card.is_image and labelled and not card.num_classes:
        if source is None:
            from training.evaluate.sources import ModuleSource

            source = ModuleSource(generator, card)
        means, counts, class_notes = class_means(source, card, samples)
        directions.class_means, directions.class_counts = means, counts
        directions.notes.update(class_notes)
    return directions


def write_directions(directions: Directions, generator_path: str | Path) -> Path:
    """The `.latent.json` sidecar beside an exported generator, naming its digest."""
    import json

    from models.generation import atomic_write
    from models.generation.latent_space import file_digest, sidecar_path

    path = sidecar_path(generator_path, "latent")
    body = directions.to_dict(file_digest(generator_path))
    return atomic_write(path, json.dumps(body).encode())
