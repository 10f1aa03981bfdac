"""Generator outputs -> pixels -> PNG grids, strips and animated GIFs.

Generators end in tanh, so outputs live in [-1, 1]; pixels are `round((x + 1) * 127.5)`
clipped to 0..255. PNGs are written here with zlib and struct rather than Pillow: a
32x32 image costs Pillow about 0.4 ms of fixed overhead against about 0.06 ms here,
which matters when one request asks for 64 of them, and the bytes depend only on the
pixels (not on the Pillow version), so a seed always gives the same file. Pillow is
imported only for the animated GIF.

`grid_png`, `strip_png`, `animated_gif` and `png_images` are the pictures the service
answers and the CLI writes: the same outputs give the same bytes through either.
"""

from __future__ import annotations

import base64
import io
import math
import struct
import zlib

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GRID_PADDING = 2  # pixels between tiles of a grid or strip
GIF_FRAME_MS = 100  # frame duration of an animated GIF


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) floats in [-1, 1] -> (N, H, W, C) uint8 pixels."""
    pixels = np.clip(np.rint((images.astype(np.float32) + 1.0) * 127.5), 0, 255)
    return pixels.astype(np.uint8).transpose(0, 2, 3, 1)


def tile(pixels: np.ndarray, columns: int | None = None) -> np.ndarray:
    """(N, H, W, C) -> one (H', W', C) image: a grid with `columns` tiles per row
    (default: as square as possible), separated by black padding."""
    n, height, width, channels = pixels.shape
    columns = columns or math.ceil(math.sqrt(n))
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    pad = GRID_PADDING
    canvas = np.zeros(
        (rows * (height + pad) + pad, columns * (width + pad) + pad, channels), np.uint8
    )
    for k in range(n):
        top = pad + (k // columns) * (height + pad)
        left = pad + (k % columns) * (width + pad)
        canvas[top : top + height, left : left + width] = pixels[k]
    return canvas


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(pixels: np.ndarray) -> bytes:
    """One (H, W, C) uint8 image with C = 1 (grey) or 3 (RGB) -> PNG bytes."""
    height, width, channels = pixels.shape
    if channels not in (1, 3):
        raise ValueError(f"PNG needs 1 or 3 channels, got {channels}")
    colour_type = 0 if channels == 1 else 2
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    rows = pixels.reshape(height, width * channels)
    # Filter type 0 (None) on every row: one zero byte in front of each scanline.
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )


def encode_gif(pixels: np.ndarray, frame_ms: int = GIF_FRAME_MS) -> bytes:
    """(N, H, W, C) -> an animated GIF that loops forever, `frame_ms` per frame."""
    from PIL import Image  # only this format needs Pillow

    if pixels.shape[-1] == 1:
        frames = [Image.fromarray(p[:, :, 0]) for p in pixels]
    else:
        # One adaptive palette per frame; dithering off so the bytes are deterministic
        # and flat areas stay flat.
        frames = [
            Image.fromarray(p).quantize(colors=256, dither=Image.Dither.NONE)
            for p in pixels
        ]
    out = io.BytesIO()
    frames[0].save(
        out, format="GIF", save_all=True, append_images=frames[1:], duration=frame_ms,
        loop=0, optimize=False, disposal=1,
    )
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- the pictures of a request: generator outputs (N, C, H, W) in [-1, 1] -> bytes -------

def grid_png(images: np.ndarray, columns: int | None = None) -> bytes:
    """A sample's grid: `columns` tiles per row, default as square as possible."""
    return encode_png(tile(to_uint8(images), columns))


def strip_png(images: np.ndarray) -> bytes:
    """An interpolation's frames side by side, in one row."""
    return encode_png(tile(to_uint8(images), len(images)))


def animated_gif(images: np.ndarray, frame_ms: int = GIF_FRAME_MS) -> bytes:
    """An interpolation's frames as an animation that loops forever."""
    return encode_gif(to_uint8(images), frame_ms)


def png_images(images: np.ndarray) -> list[bytes]:
    """One PNG per image."""
    return [encode_png(p) for p in to_uint8(images)]
