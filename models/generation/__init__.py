"""The generation layer: from an exported generator file to pixels and files, no torch.

The service, the CLI's `sample` and `interpolate`, and the tools built on them all go
through it, so the same request gives the same bytes everywhere:

    generator = OnnxGenerator(path, device="auto", threads=None)  # onnx_generator.py
    plan = plan_sample(generator.card, seed=3, n=16, label=7)     # plan.py: latents, labels
    images = generator.generate(plan.latents, plan.labels)        # (N, C, H, W) in [-1, 1]
    atomic_write("grid.png", grid_png(images))                    # pictures.py, files.py

`store` names the model-store entries, finds the file a spec means, and names what a
service serves (`model_name`, `default_specs`). The way back and across:
`image_input.read_image` turns PNG/JPEG bytes into the generator's input space as its
training data was made, and `latent_space` opens a generator's sidecars (encoder, edit
directions) and plans projections, edits and sums. Imports: numpy,
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
    plan_tensors,
    sample_labels,
)
from models.generation.store import (
    BUNDLED,
    DEFAULT_TAG,
    PRETRAINED,
    STORE_FILE,
    default_specs,
    file_digest,
    model_name,
    resolve_model,
    store_name,
)

__all__ = [
    "BUNDLED", "DEFAULT_TAG", "DEVICES", "Directions", "GIF_FRAME_MS", "GRID_PADDING",
    "ImageLimits", "LatentSearch", "LatentSpace", "OnnxEncoder", "PRETRAINED", "STORE_FILE",
    "GenerationError", "ModelLoadError", "OnnxGenerator", "Plan", "animated_gif",
    "atomic_write", "b64", "check_format", "check_label", "check_signature", "cpu_threads",
    "default_specs", "encode_gif", "encode_png", "file_digest", "grid_png",
    "interpolation_labels", "model_name", "open_latent_space", "pixel_rms", "plan_combine",
    "plan_edit", "plan_interpolation", "plan_sample", "plan_tensors", "png_images",
    "read_image", "resolve_model", "sample_labels", "search_latents", "sidecar_path",
    "store_name", "strip_png", "tile", "to_uint8",
]
