"""The progressive GAN's pieces: shapes per scale, fade-in, equalised lr, minibatch stddev, WGAN-GP, EMA."""

from __future__ import annotations

import torch
from smf.gan.config import parse_config
from smf.gan.model import (
    GanArgs,
    ProgressiveGAN,
    alpha_at,
    d_loss,
    g_loss,
    minibatch_stddev,
    pixel_norm,
    random_latents,
    resize,
    spectrogram_ceiling,
    to_full_spectrogram,
    to_images,
)
from support.tiny_gan import tiny_dict


def _gan(n_classes=()):
    torch.manual_seed(0)
    return ProgressiveGAN(GanArgs.from_config(parse_config(tiny_dict()), list(n_classes)))


def test_shapes_at_every_scale_and_full_spectrogram_with_nyquist_bin():
    gan = _gan()
    a = gan.args
    assert a.n_bins == 65 and a.scale_shapes == [(8, 4), (16, 8), (32, 16), (64, 32)]
    z = random_latents(a, 4, torch.Generator().manual_seed(0))
    for s, shape in enumerate(a.scale_shapes):
        img = gan.G(z, s, 0.5 if s else 0.0)
        assert img.shape == (4, 1, *shape)
        critic, logits = gan.D(img, s, 0.5 if s else 0.0)
        assert critic.shape == (4,) and logits.shape == (4, 0)
        spec = to_full_spectrogram(img, a)
        assert spec.shape == (4, 65, 32)
        assert torch.equal(spec[:, -1], spec[:, -2])  # the Nyquist bin is a copy of the top generated bin
    real = torch.rand(3, 65, 32)
    assert to_images(real, a, 3).shape == (3, 1, 64, 32)
    assert torch.equal(to_images(real, a, 3)[:, 0], real[:, :64])


def test_alpha_one_gives_the_previous_scale_upsampled():
    gan = _gan()
    a, z = gan.args, random_latents(gan.args, 2)
    with torch.no_grad():
        faded = gan.G(z, 2, 1.0)
        prev = resize(gan.G(z, 1, 0.0), a.scale_shapes[2])
    torch.testing.assert_close(faded, prev)
    assert alpha_at(0, 0, 10, 3) == 0.0
    assert alpha_at(0, 1, 10, 3) == 1.0 and alpha_at(15, 1, 10, 3) == 0.5 and alpha_at(99, 1, 10, 3) == 0.0


def test_equalised_lr_pixel_norm_and_minibatch_stddev():
    conv = _gan().G.conv0
    assert abs(conv.weight.std().item() - 1.0) < 0.05  # N(0,1) storage; He scale applied at run time
    x = torch.randn(8, 16, 4, 4) * 7
    assert torch.allclose(pixel_norm(x).pow(2).mean(1), torch.ones(8, 4, 4), atol=1e-4)
    y = minibatch_stddev(torch.randn(6, 3, 2, 2))  # 6 is not a multiple of 4: groups of 3
    assert y.shape == (6, 4, 2, 2)
    torch.testing.assert_close(minibatch_stddev(torch.ones(4, 3, 2, 2))[:, 3], torch.full((4, 2, 2), 1e-4))  # no spread


def test_wgan_gp_losses_backprop_and_conditioning():
    gan = _gan(n_classes=[3])
    a = gan.args
    assert a.input_dim == 16 + 3
    labels = torch.tensor([[0], [1], [2], [1]])
    z = random_latents(a, 4, labels=labels)
    assert torch.equal(z[:, 16:].argmax(1), labels[:, 0])
    real = to_images(torch.rand(4, 65, 32) * 2 - 1, a, 1)
    fake = gan.G(z, 1, 0.3)
    ld, logs = d_loss(gan, real, fake, 1, 0.3, lambda_gp=10, epsilon_d=1e-3, labels=labels, weight_condition=1)
    ld.backward()
    assert logs["gp"] > 0 and all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert gan.D.decision.weight.grad is not None and gan.G.format.weight.grad is None  # D step: fake detached
    lg, _ = g_loss(gan, gan.G(z, 1, 0.3), 1, 0.3, labels=labels, weight_condition=1)
    lg.backward()
    assert gan.G.format.weight.grad is not None


def test_ema_moves_towards_the_generator():
    gan = _gan()
    with torch.no_grad():
        for p in gan.G.parameters():
            p.add_(1.0)
    before = gan.G_ema.conv0.bias.clone()
    gan.update_ema(0.9)
    torch.testing.assert_close(gan.G_ema.conv0.bias, before + 0.1)


def test_sampled_spectrograms_are_capped_at_the_datas_loudest_bins():
    data = torch.full((5, 65, 32), -0.5)
    data[2, 10, 7] = 0.9  # the loudest value of bin 10 is in one clip and one frame
    ceiling = spectrogram_ceiling(data)
    assert len(ceiling) == 65 and abs(ceiling[10] - 0.9) < 1e-6 and ceiling[0] == -0.5
    args = GanArgs.from_config(parse_config(tiny_dict()), ceiling=ceiling)
    torch.manual_seed(0)
    gan = ProgressiveGAN(args)
    z = random_latents(args, 8, torch.Generator().manual_seed(0))
    capped = gan.spectrogram(z, 3)
    assert (capped <= torch.tensor(ceiling)[:, None]).all()
    uncapped = ProgressiveGAN(GanArgs.from_config(parse_config(tiny_dict())))
    uncapped.load_state_dict(gan.state_dict())  # the cap is in the args, not the weights: old checkpoints load
    raw = uncapped.spectrogram(z, 3)
    assert (raw > torch.tensor(ceiling)[:, None]).any()  # a random generator goes above it: the cap does something
    assert torch.equal(capped, torch.minimum(raw, torch.tensor(ceiling)[:, None]))
