"""Pictures in: PNG or JPEG bytes -> a generator's input space, the way its training
data was made. The service's /project and the CLI's `dcgan project` both call
`read_image`, so the same file gives the same array (and latent) through either.

Checks come before decoding: the byte count, then the format and the size from the
header (Pillow reads only the header on open), so a decompression bomb (a small file
that claims millions of pixels), a 0x0 image or a file that is not an image is refused
naming the field and the limit before any pixel is decoded; a truncated file fails in
the decoder and is refused the same way. Then, in order:

1. alpha is composited onto a background that contrasts with the opaque pixels (a
   dark drawing on a transparent canvas lands on white, a light one on black);
2. channels: grey for a 1-channel model (ITU-R 601 luma, as training converted
   colour), RGB for a 3-channel one;
3. polarity: datasets of light ink on a dark ground (MNIST and friends) get an image
   whose border is mostly light inverted (`invert="auto"`; or always / never);
4. framing: MNIST digits are their ink's bounding box scaled to 20x20 and centred by
   its centre of mass in a 28x28 frame, and a drawn digit is framed the same way
   (`fit="digit"`; a real MNIST digit comes out of it unchanged); other images have their
   shorter side resized to the model's and are centre-cropped (`fit="crop"`);
5. scale to [-1, 1] (x / 127.5 - 1), the generator's output range.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from models.card import ModelCard
from models.generation.errors import GenerationError

FORMATS = ("PNG", "JPEG")
# Datasets of light ink on a dark ground, and those framed as MNIST frames its digits.
DARK_GROUND = ("mnist5k", "mnist", "fashion-mnist", "digits")
DIGIT_FRAMED = ("mnist5k", "mnist")
DIGIT_FRAME, DIGIT_BOX = 28, 20  # MNIST: a 20x20 box centred by mass in 28x28
INK_THRESHOLD = 16  # of 255: what counts as ink when framing a digit (JPEG noise stays below)
FITS = ("auto", "digit", "crop")
INVERTS = ("auto", "yes", "no")


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 4 * 1024 * 1024  # one encoded image
    max_pixels: int = 4096 * 4096  # width x height, read from the header


def read_image(data: bytes, card: ModelCard, *, field: str = "image",
               limits: ImageLimits = ImageLimits(), fit: str = "auto",
               invert: str = "auto") -> np.ndarray:
    """PNG or JPEG bytes -> (nc, S, S) float32 in [-1, 1] for `card`'s generator.
    GenerationError naming `field` (and the limit) for anything that is not a usable image."""
    from PIL import Image, UnidentifiedImageError

    if not card.is_image:
        raise GenerationError(field, f"{field}: this model makes points, not images")
    if fit not in FITS:
        raise GenerationError("fit", f"fit must be one of {', '.join(FITS)}, got {fit!r}")
    if invert not in INVERTS:
        raise GenerationError("invert", f"invert must be one of {', '.join(INVERTS)}, got {invert!r}")
    if not data:
        raise GenerationError(field, f"{field}: empty; send a PNG or JPEG image")
    if len(data) > limits.max_bytes:
        raise GenerationError(field, f"{field}: at most {limits.max_bytes} bytes per image, "
                              f"got {len(data)}")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)  # the header only
    except Image.DecompressionBombError:  # Pillow's own guard, far above ours
        raise GenerationError(field, f"{field}: at most {limits.max_pixels} pixels per image; "
                              f"its header claims over {2 * Image.MAX_IMAGE_PIXELS}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise GenerationError(field, f"{field}: not a PNG or JPEG image") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise GenerationError(field, f"{field}: the image is {width}x{height}; it needs at "
                              "least one pixel")
    if width * height > limits.max_pixels:
        raise GenerationError(field, f"{field}: at most {limits.max_pixels} pixels per image, "
                              f"got {width}x{height} = {width * height}")
    try:
        image.load()
    except Exception:  # truncated, corrupt, or a bomb Pillow's own guard caught
        raise GenerationError(field, f"{field}: the {image.format} data is truncated or "
                              "corrupt") from None
    return convert(image, card, fit=fit, invert=invert)


def convert(image, card: ModelCard, *, fit: str = "auto", invert: str = "auto") -> np.ndarray:
    """A decoded Pillow image -> (nc, S, S) float32 in [-1, 1] (steps 1-5 above)."""
    from PIL import Image

    nc, size = card.output_shape[0], card.output_shape[1]
    dataset = str(card.dataset.get("name", ""))
    image = _composite(image)
    image = image.convert("L" if nc == 1 else "RGB")
    pixels = np.asarray(image)
    grey = pixels if pixels.ndim == 2 else np.asarray(image.convert("L"))
    if invert == "yes" or (invert == "auto" and dataset in DARK_GROUND and _light_border(grey)):
        pixels, grey = 255 - pixels, 255 - grey
    if fit == "digit" or (fit == "auto" and dataset in DIGIT_FRAMED):
        pixels = _frame_digit(pixels, grey)
        framed = Image.fromarray(pixels)
        out = np.asarray(framed.resize((size, size), Image.Resampling.BILINEAR)
                         if framed.size != (size, size) else framed)
    else:
        out = np.asarray(_crop(Image.fromarray(pixels), size))
    out = out.reshape(size, size, nc).transpose(2, 0, 1)  # (nc, S, S)
    return (out.astype(np.float32) / 127.5 - 1.0).astype(np.float32)


def _composite(image):
    from PIL import Image

    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode not in ("RGBA", "LA", "PA"):
        return image
    rgba = image.convert("RGBA")
    alpha = np.asarray(rgba)[:, :, 3]
    opaque = np.asarray(rgba.convert("L"))[alpha > 127]
    ground = (255, 255, 255) if opaque.size == 0 or opaque.mean() < 128 else (0, 0, 0)
    canvas = Image.new("RGBA", rgba.size, (*ground, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def _light_border(grey: np.ndarray) -> bool:
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return float(border.mean()) > 127.5


def _frame_digit(pixels: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """MNIST's framing: the ink's bounding box scaled to fit DIGIT_BOX, centred by its
    centre of mass in a DIGIT_FRAME square. No ink: the whole image, resized."""
    from PIL import Image

    ink = grey >= INK_THRESHOLD
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return np.asarray(Image.fromarray(pixels).resize((DIGIT_FRAME, DIGIT_FRAME),
                                                         Image.Resampling.BILINEAR))
    box = pixels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    height, width = box.shape[:2]
    scale = DIGIT_BOX / max(height, width)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    patch = Image.fromarray(box)
    if scale != 1:
        patch = patch.resize(new, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR)
    patch = np.asarray(patch)
    weight = (patch if patch.ndim == 2 else patch.mean(axis=2)).astype(np.float64)
    total = weight.sum() or 1.0
    cy = (weight.sum(axis=1) * np.arange(weight.shape[0])).sum() / total
    cx = (weight.sum(axis=0) * np.arange(weight.shape[1])).sum() / total
    top = int(round(DIGIT_FRAME / 2 - cy))  # MNIST puts the centre of mass at (14, 14)
    left = int(round(DIGIT_FRAME / 2 - cx))
    frame = np.zeros((DIGIT_FRAME, DIGIT_FRAME, *patch.shape[2:]), np.uint8)
    # paste with clipping: a lopsided digit may be pushed partly out, as in MNIST
    y0, x0 = max(top, 0), max(left, 0)
    y1 = min(top + patch.shape[0], DIGIT_FRAME)
    x1 = min(left + patch.shape[1], DIGIT_FRAME)
    if y1 > y0 and x1 > x0:
        frame[y0:y1, x0:x1] = patch[y0 - top:y1 - top, x0 - left:x1 - left]
    return frame


def _crop(image, size: int):
    """Shorter side resized to `size`, centre-cropped (as training reads image folders)."""
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    if new != image.size:
        image = image.resize(new, Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return image.crop((left, top, left + size, top + size))
