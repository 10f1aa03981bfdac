"""Latent vectors for training and serving: NUMPY ONLY (the service imports this).

Each seed owns its own stream, `Generator(PCG64(seed)).standard_normal`, so the latent
of a seed does not depend on which batch it was asked in, nor on the machine.

Truncation (the "truncation trick" of BigGAN): entries with |z| above the threshold
are redrawn from the same stream until they fall inside, which trades variety for
fidelity and stays reproducible per seed.

Interpolation is spherical by default: Gaussian latents in high dimension concentrate
on a shell of radius sqrt(nz), and linear midpoints fall inside it, where the
generator saw no training data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

MAX_SEED = 2**63 - 1
METHODS = ("slerp", "lerp")


def parse_seeds(text: str, max_count: int | None = None) -> list[int]:
    """Parse "0-15", "3,7,9" or "0-3,10" into a list of seeds."""
    seeds: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if part[0] != "-" else (part, "")
                first, last = int(lo), int(hi)
                if last < first:
                    raise ValueError
            else:
                first = last = int(part)
        except ValueError:
            raise ValueError(
                f"seeds must look like '0-15' or '1,5,9' (non-negative integers), got {text!r}"
            ) from None
        # counted before listing: "0-9999999999" must not be expanded to find it too long
        if max_count is not None and len(seeds) + last - first + 1 > max_count:
            raise ValueError(f"seeds: at most {max_count} seeds, got more in {text!r}")
        seeds.extend(range(first, last + 1))
    if not seeds:
        raise ValueError(f"seeds: no seed in {text!r}")
    for seed in seeds:
        check_seed(seed)
    return seeds


def check_seed(seed: int) -> int:
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed}")
    return seed


def latent_from_seed(seed: int, nz: int, truncation: float | None = None) -> np.ndarray:
    """One latent vector of shape (nz,), float32, from its own PCG64 stream."""
    rng = np.random.Generator(np.random.PCG64(check_seed(int(seed))))
    z = rng.standard_normal(nz)
    if truncation is not None:
        if truncation <= 0:
            raise ValueError(f"truncation must be above 0, got {truncation}")
        outside = np.abs(z) > truncation
        while outside.any():
            z[outside] = rng.standard_normal(int(outside.sum()))
            outside = np.abs(z) > truncation
    return z.astype(np.float32)


def latents_from_seeds(
    seeds: Iterable[int], nz: int, truncation: float | None = None
) -> np.ndarray:
    """Stack the latents of `seeds`: shape (len(seeds), nz), float32."""
    rows = [latent_from_seed(seed, nz, truncation) for seed in seeds]
    if not rows:
        return np.zeros((0, nz), dtype=np.float32)
    return np.stack(rows)


CLASS_CODE_SEED = 0


def class_code(nz: int, num_classes: int) -> np.ndarray:
    """(num_classes, nz) orthonormal rows, the same for every run of these sizes: the
    linear code of a generator trained with latent classes (`dcgan train --latent-classes`),
    whose fakes D was told are of class argmax(code @ z). Each class is then a cone of
    the Gaussian latent around its row, of equal mass, and the mean latent of a class
    lies along that row."""
    if num_classes > nz:
        raise ValueError(f"a class code needs nz >= classes, got nz {nz} and {num_classes} classes")
    rng = np.random.Generator(np.random.PCG64(CLASS_CODE_SEED))
    q, r = np.linalg.qr(rng.standard_normal((nz, num_classes)))
    return (q * np.sign(np.diag(r))).T.astype(np.float32)  # the signs make QR unique


def code_classes(latents: np.ndarray, code: np.ndarray) -> np.ndarray:
    """The class the code gives each latent: argmax of its projections on the rows."""
    return np.asarray(latents @ code.T).argmax(axis=1)


def truncate(latents: np.ndarray, threshold: float) -> np.ndarray:
    """Clip given latents to [-threshold, threshold] (for client-sent vectors, which
    have no stream to redraw from)."""
    if threshold <= 0:
        raise ValueError(f"truncation must be above 0, got {threshold}")
    return np.clip(latents, -threshold, threshold).astype(np.float32)


def lerp(start: np.ndarray, end: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear interpolation; `t` of shape (steps,) gives (steps, nz)."""
    t = np.asarray(t, dtype=np.float64)[:, None]
    return ((1.0 - t) * start[None, :] + t * end[None, :]).astype(np.float32)


def slerp(start: np.ndarray, end: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation (Shoemake 1985), falling back to lerp for (anti)parallel
    vectors, where the great circle is undefined. Norms are interpolated linearly, so
    the path stays near the shell that Gaussian latents live on."""
    t = np.asarray(t, dtype=np.float64)
    a, b = start.astype(np.float64), end.astype(np.float64)
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    if norm_a == 0 or norm_b == 0:
        return lerp(start, end, t)
    cos_omega = np.clip(np.dot(a / norm_a, b / norm_b), -1.0, 1.0)
    omega = np.arccos(cos_omega)
    if np.sin(omega) < 1e-6:
        return lerp(start, end, t)
    sin_omega = np.sin(omega)
    wa = np.sin((1.0 - t) * omega)[:, None] / sin_omega
    wb = np.sin(t * omega)[:, None] / sin_omega
    return (wa * a[None, :] + wb * b[None, :]).astype(np.float32)


def interpolate(
    start: np.ndarray, end: np.ndarray, steps: int, method: str = "slerp"
) -> np.ndarray:
    """`steps` latents from `start` to `end` inclusive: shape (steps, nz)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    start, end = np.asarray(start, np.float32), np.asarray(end, np.float32)
    if start.shape != end.shape or start.ndim != 1:
        raise ValueError(f"start and end must be vectors of one length, got {start.shape} and {end.shape}")
    t = np.linspace(0.0, 1.0, steps)
    path = slerp(start, end, t) if method == "slerp" else lerp(start, end, t)
    path[0], path[-1] = start, end  # exact end points, whatever the rounding
    return path


def as_latent(values: Sequence[float], nz: int, field: str = "latent") -> np.ndarray:
    """Validate a client-sent latent: length nz and finite."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] != nz:
        raise ValueError(f"{field} must be a list of exactly {nz} numbers, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{field} must hold finite numbers only (no NaN or infinity)")
    return arr.astype(np.float32)


def labels_for_seeds(seeds: Iterable[int], num_classes: int) -> np.ndarray:
    """Default class labels for a conditional model when the client gives none:
    `seed % num_classes`, so a grid of consecutive seeds shows every class."""
    return np.asarray([int(s) % num_classes for s in seeds], dtype=np.int64)
