"""The generation layer: from an exported generator file to pixels and files, no torch.

The service, the CLI's `sample` and `interpolate`, and the tools built on them all go
through it, so the same request gives the same bytes everywhere:

    generator = OnnxGenerator(path, device="auto", threads=None)  # onnx_generator.py
    plan = plan_sample(generator.card, seed=3, n=16, label=7)     # plan.py: latents, labels
    images = generator.generate(plan.latents, plan.labels)        # (N, C, H, W) in [-1, 1]
    atomic_write("grid.png", grid_png(images))                    # pictures.py, files.py

`store` names the model-store entries and finds the file a spec means. The way back
and across: `image_input.read_image` turns PNG/JPEG bytes into the generator's input
space as its training data was made, and `latent_space` opens a generator's sidecars
(encoder, edit directions) and plans projections, edits and sums. Imports: numpy,
onnxruntime (when a generator is opened), Pillow (for GIFs only), BentoML (for store
look-ups only), `models.latent` and `models.card`; never torch, `training` or `service`.
"""

from models.generation.errors import GenerationError, ModelLoadError
from models.generation.files import atomic_write
from models.generation.image_input import ImageLimits, read_image
from models.generation.latent_space import (
    Directions,
    LatentSearch,
    LatentSpace,
    OnnxEncoder,
    file_digest,
    open_latent_space,
    pixel_rms,
    plan_combine,
    plan_edit,
    search_latents,
    sidecar_path,
)
from models.generation.onnx_generator import DEVICES, OnnxGenerator, check_signature, cpu_threads
from models.generation.pictures import (
    GIF_FRAME_MS,
    GRID_PADDING,
    animated_gif,
    b64,
    encode_gif,
    encode_png,
    grid_png,
    png_images,
    strip_png,
    tile,
    to_uint8,
)
from models.generation.plan import (
    Plan,
    check_format,
    check_label,
    interpolation_labels,
    plan_interpolation,
    plan_sample,
    sample_labels,
)
from models.generation.store import (
    BUNDLED,
    DEFAULT_TAG,
    STORE_FILE,
    resolve_model,
    store_name,
)

__all__ = [
    "BUNDLED", "DEFAULT_TAG", "Directions", "ImageLimits", "LatentSearch", "LatentSpace",
    "OnnxEncoder", "file_digest", "open_latent_space", "pixel_rms", "plan_combine", "plan_edit",
    "read_image", "search_latents", "sidecar_path", "DEVICES", "GIF_FRAME_MS", "GRID_PADDING", "STORE_FILE",
    "GenerationError", "ModelLoadError", "OnnxGenerator", "Plan", "animated_gif",
    "atomic_write", "b64", "check_format", "check_label", "check_signature", "cpu_threads",
    "encode_gif", "encode_png", "grid_png", "interpolation_labels", "plan_interpolation",
    "plan_sample", "png_images", "resolve_model", "sample_labels", "store_name", "strip_png",
    "tile", "to_uint8",
]
