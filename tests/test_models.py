"""DCGAN and MLP networks: shapes for every supported size, config errors, conditioning,
packing and the DCGAN paper's weight initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import build_models, model_config
from models.dcgan import DCGANConfig, Discriminator, Generator
from models.mlp import MLPConfig, MLPDiscriminator, MLPGenerator

SIZES = (16, 32, 64, 128, 256)


def tiny(**overrides) -> DCGANConfig:
    return DCGANConfig(**{"nz": 8, "ngf": 2, "ndf": 2, **overrides})


@pytest.mark.parametrize("nc", (1, 3))
@pytest.mark.parametrize("size", SIZES)
def test_dcgan_shapes_for_every_size_and_channel_count(size, nc):
    torch.manual_seed(0)
    config = tiny(nc=nc, image_size=size)
    generator, discriminator = build_models("dcgan", vars(config))
    with torch.no_grad():
        images = generator(torch.randn(2, config.nz))
        logits = discriminator(images)
    assert images.shape == (2, nc, size, size)
    assert images.min() >= -1 and images.max() <= 1  # tanh output
    assert logits.shape == (2,)
    # one (transposed) convolution per doubling: 4x4 first, then up to the image size
    n_convs = sum(isinstance(m, nn.ConvTranspose2d) for m in generator.modules())
    assert 2 ** (n_convs + 1) == size


def test_channel_widths_double_towards_4x4_and_are_capped_at_8x():
    generator = Generator(DCGANConfig(nz=4, ngf=3, image_size=256))
    widths = [m.out_channels for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert widths == [24, 24, 24, 12, 6, 3, 1]
    discriminator = Discriminator(DCGANConfig(ndf=3, image_size=64))
    widths = [m.out_channels for m in discriminator.features if isinstance(m, nn.Conv2d)]
    assert widths == [3, 6, 12, 24]


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"image_size": 8}, "image_size"),
        ({"image_size": 48}, "image_size"),
        ({"image_size": 512}, "image_size"),
        ({"nc": 2}, "nc"),
        ({"nz": 0}, "nz"),
        ({"ngf": 0}, "ngf"),
        ({"ndf": -1}, "ndf"),
        ({"pack": 0}, "pack"),
        ({"num_classes": -1}, "num_classes"),
        ({"d_norm": "cosine"}, "d_norm"),
        ({"pack": 2, "num_classes": 10}, "pack"),
    ],
)
def test_bad_dcgan_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        DCGANConfig(**overrides)


def test_model_config_rejects_unknown_arch():
    with pytest.raises(ValueError, match="arch must be one of dcgan, mlp, got 'gpt'"):
        build_models("gpt", {})
    assert isinstance(model_config("mlp", {"nz": 3}), MLPConfig)


def test_conditional_generator_needs_labels_and_labels_change_the_image():
    torch.manual_seed(0)
    config = tiny(num_classes=10, image_size=16)
    generator, discriminator = build_models("dcgan", vars(config))
    generator.eval()
    discriminator.eval()
    latents = torch.randn(1, config.nz).repeat(3, 1)  # one latent, three times
    with pytest.raises(ValueError, match="labels are required"):
        generator(latents)
    with torch.no_grad():
        images = generator(latents, torch.tensor([3, 3, 7]))
    assert torch.equal(images[0], images[1])
    # freshly initialised outputs are small: compare the change with the image itself
    assert (images[0] - images[2]).abs().max() > 0.1 * images[0].abs().max()
    with pytest.raises(ValueError, match="labels are required"):
        discriminator(images)
    with torch.no_grad():
        logits = discriminator(images, torch.tensor([3, 7, 7]))
    assert logits.shape == (3,) and logits[0] != logits[1]


def test_conditioning_strength_fades_the_labels_out_and_stays_out_of_the_state_dict():
    """Transitional conditioning: at strength 0 both networks ignore the label (the
    unconditional phase); the strength is not saved, so a loaded model is conditional."""
    from models.dcgan import set_conditioning

    torch.manual_seed(0)
    config = tiny(num_classes=10, image_size=16)
    generator, discriminator = build_models("dcgan", vars(config))
    generator.eval()
    discriminator.eval()
    latents = torch.randn(1, config.nz).repeat(2, 1)
    labels = torch.tensor([3, 7])
    set_conditioning(generator, 0.0)
    set_conditioning(discriminator, 0.0)
    with torch.no_grad():
        images = generator(latents, labels)
        logits = discriminator(images[:1].repeat(2, 1, 1, 1), labels)
    assert torch.equal(images[0], images[1]) and logits[0] == logits[1]
    set_conditioning(generator, 0.5)
    with torch.no_grad():
        half = generator(latents, labels)
    assert not torch.equal(half[0], half[1])
    assert "conditioning" not in generator.state_dict()
    fresh, _ = build_models("dcgan", vars(config))
    fresh.load_state_dict(generator.state_dict())
    assert float(fresh.conditioning) == 1.0


def test_packed_discriminator_judges_samples_in_groups():
    torch.manual_seed(0)
    config = tiny(nc=3, image_size=16, pack=2)
    discriminator = Discriminator(config).eval()
    assert discriminator.features[0].in_channels == 3 * 2
    a, b, c, d, e = torch.rand(5, 1, 3, 16, 16).unbind(0)
    with torch.no_grad():
        logits = discriminator(torch.cat([a, b, c, d]))
        other = discriminator(torch.cat([a, b, e, d]))
    assert logits.shape == (2,)  # 4 samples, 2 judged inputs
    assert logits[0] == other[0]  # the first pack did not change
    assert logits[1] != other[1]  # the second did
    # the pack is stacked along the channel axis, in order
    unpacked = Discriminator(config).eval()
    unpacked.load_state_dict(discriminator.state_dict())
    unpacked.config = tiny(nc=3, image_size=16, pack=1)
    with torch.no_grad():
        assert torch.equal(unpacked(torch.cat([a, b], dim=1)), logits[:1])


def test_mlp_shapes_for_points_and_images():
    torch.manual_seed(0)
    points = MLPConfig(nz=2, hidden=16, layers=2)
    generator, discriminator = MLPGenerator(points), MLPDiscriminator(points)
    samples = generator(torch.randn(5, 2))
    assert samples.shape == (5, 2)
    assert samples.abs().max() > 0  # linear output: any real value
    assert discriminator(samples).shape == (5,)

    images = MLPConfig(nz=4, hidden=16, layers=1, out_shape=[1, 8, 8], output="tanh", pack=2)
    generator, discriminator = build_models("mlp", vars(images))
    samples = generator(torch.randn(6, 4))
    assert samples.shape == (6, 1, 8, 8)
    assert samples.min() >= -1 and samples.max() <= 1
    assert discriminator(samples).shape == (3,)  # packs of two
    assert discriminator.main[0].in_features == 2 * 64
    assert images.out_dim == 64


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"output": "relu"}, "output must be linear or tanh"),
        ({"num_classes": 10}, "no class conditioning"),
        ({"hidden": 0}, "hidden must be at least 1"),
        ({"layers": 0}, "layers must be at least 1"),
    ],
)
def test_bad_mlp_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        MLPConfig(**overrides)


def test_weights_init_follows_the_dcgan_paper():
    torch.manual_seed(0)
    config = DCGANConfig(nz=100, ngf=64, ndf=64, nc=3, image_size=64, num_classes=10)
    generator, discriminator = build_models("dcgan", vars(config))
    layer_norm_d, _ = build_models("dcgan", {**vars(config), "d_norm": "layer"})
    modules = [*generator.modules(), *discriminator.modules(), *layer_norm_d.modules()]

    def values(kinds, name):
        return torch.cat([getattr(m, name).detach().flatten() for m in modules
                          if isinstance(m, kinds) and getattr(m, name, None) is not None])

    weights = values((nn.Conv2d, nn.ConvTranspose2d), "weight")
    assert weights.numel() > 1_000_000
    assert abs(float(weights.mean())) < 1e-3
    assert float(weights.std()) == pytest.approx(0.02, rel=0.02)
    scales = values((nn.BatchNorm2d, nn.GroupNorm), "weight")
    assert float(scales.mean()) == pytest.approx(1.0, abs=0.01)
    assert float(scales.std()) == pytest.approx(0.02, rel=0.2)
    assert torch.count_nonzero(values((nn.BatchNorm2d, nn.GroupNorm), "bias")) == 0
    # the label embedding joins the latent, so it is drawn like it; D's projection stays small
    assert float(generator.label_embedding.weight.detach().std()) == pytest.approx(1.0, rel=0.1)
    assert float(discriminator.label_projection.weight.detach().std()) == pytest.approx(0.02, rel=0.1)
    # a fresh module has PyTorch's default init instead: the test can tell them apart
    assert float(Generator(config).main[0].weight.detach().std()) != pytest.approx(0.02, rel=0.1)


def test_spectral_norm_discriminator_has_unit_spectral_norm_convolutions():
    torch.manual_seed(0)
    config = DCGANConfig(nz=16, ngf=8, ndf=8, image_size=32, d_norm="spectral")
    _, discriminator = build_models("dcgan", vars(config))
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in discriminator.modules())
    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4  # three strided layers and the head
    originals = torch.cat([m.parametrizations.weight.original.detach().flatten() for m in convs])
    assert float(originals.std()) == pytest.approx(0.02, rel=0.1)  # DCGAN init of the stored weight
    discriminator.train()
    for _ in range(30):  # one power iteration per training-mode forward
        discriminator(torch.randn(4, 1, 32, 32))
    for conv in convs:
        largest = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert float(largest) == pytest.approx(1.0, abs=0.05)
        raw = torch.linalg.matrix_norm(conv.parametrizations.weight.original.detach().flatten(1), ord=2)
        assert float(raw) != pytest.approx(1.0, abs=0.05)  # the normalisation did something
