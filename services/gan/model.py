"""Progressive GAN on log-magnitude spectrograms (GANSynth / PGGAN style), in one file.

The "images" are normalised log-magnitude spectrograms [B, 1, F, N] (frequency x time) from the pghi transform. Both
networks grow scale by scale (`downSamplingFactor` gives each scale's size relative to the full image); while a new
scale fades in, `alpha` goes 1 -> 0 and blends the upsampled output of the previous scale with the new one (the
pytorch_GAN_zoo convention the original SMF GAN used). Ingredients, as in Karras et al. 2018: equalised learning
rate, pixel norm, minibatch stddev, leaky ReLU, WGAN-GP loss with the small epsilon drift term; an EMA copy of the
generator is what sampling uses.

Odd bin counts: the transform gives F = stft_channels//2 + 1 bins (e.g. 257), which does not halve. The generator
makes F-1 = 256 bins and the Nyquist bin is appended as a copy of the top generated bin (`to_full_spectrogram`); the
discriminator sees real spectrograms with the Nyquist bin dropped. The Nyquist bin carries next to nothing for
real audio, and PGHI needs all F bins, so this is the least surprising choice.

All scales' layers exist from the start (unused ones simply get no gradient); that keeps one fixed state_dict, so
checkpoints, the optimizer state and the EMA need no surgery when a scale is added.

    args = GanArgs.from_config(cfg)           # cfg: smf.gan.config.GanConfig
    gan = ProgressiveGAN(args)
    z = random_latents(args, 8, torch.Generator().manual_seed(0))
    spec = gan.spectrogram(z, scale=args.n_scales - 1)    # [8, F, N], uses the EMA generator
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from smf.gan.config import generated_bins
from torch import nn


@dataclass
class GanArgs:
    """What the network shape needs (saved in checkpoints next to the weights)."""

    n_bins: int  # F of the transform (stft_channels//2 + 1)
    n_frames: int  # N
    downsampling: list[list[int]]  # per scale [freq factor, time factor] relative to the full image
    depths: list[int]  # channels per scale (depthScales)
    latent_dim: int  # dimLatentVector (noise part)
    n_classes: list[int] = field(default_factory=list)  # class count per conditioning attribute (one-hot appended)
    leakyness: float = 0.2
    pixel_norm: bool = True
    minibatch_std: bool = True
    # Per frequency bin, the loudest value of the training spectrograms (see spectrogram_ceiling); sampled
    # spectrograms are capped there. [] (checkpoints from before): no cap.
    ceiling: list[float] = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg, n_classes: list[int] | None = None, ceiling: list[float] | None = None) -> GanArgs:
        m, t = cfg.model, cfg.transform
        return cls(
            n_bins=t.n_bins,
            n_frames=t.n_frames,
            downsampling=[list(d) for d in m.downSamplingFactor],
            depths=list(m.depthScales),
            latent_dim=m.dimLatentVector,
            n_classes=list(n_classes or []),
            leakyness=m.leakyness,
            pixel_norm=m.perChannelNormalization,
            minibatch_std=m.miniBatchStdDev,
            ceiling=list(ceiling or []),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def n_scales(self) -> int:
        return len(self.downsampling)

    @property
    def input_dim(self) -> int:
        """Length of a latent as stored in `<i>.pt`: noise plus the appended one-hot labels."""
        return self.latent_dim + sum(self.n_classes)

    @property
    def scale_shapes(self) -> list[tuple[int, int]]:
        fg = generated_bins(self.n_bins)
        return [(fg // df, self.n_frames // dt) for df, dt in self.downsampling]


# --- building blocks -------------------------------------------------------------------------------------------------
class EqualizedConv2d(nn.Module):
    """Conv whose weights are N(0,1) and scaled by He's constant at run time, so Adam's per-parameter step sizes
    become the same for every layer (equalised learning rate)."""

    def __init__(self, cin: int, cout: int, kernel: int, padding: int = 0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = math.sqrt(2.0 / (cin * kernel * kernel))
        self.padding = padding

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualizedLinear(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = math.sqrt(2.0 / cin)

    def forward(self, x):
        return F.linear(x, self.weight * self.scale, self.bias)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalise each position's feature vector to unit RMS (over channels, dim 1)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def minibatch_stddev(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Append one feature map: the mean stddev of features over groups of samples, so D can see (lack of) variety."""
    b, c, h, w = x.shape
    g = min(group, b)
    while b % g:  # largest group size <= 4 that divides the batch
        g -= 1
    y = x.view(g, -1, c, h, w)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # [B/g, C, H, W]
    y = y.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)  # [B/g, 1, 1, 1]
    y = y.repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest upsampling or box-filter downsampling to an exact (F, N) size (factors need not be 2)."""
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="nearest")


# --- generator --------------------------------------------------------------------------------------------------------
class Generator(nn.Module):
    def __init__(self, a: GanArgs):
        super().__init__()
        self.a = a
        d, (h0, w0) = a.depths, a.scale_shapes[0]
        # "gansynth" format layer: a full-size conv on the 1x1 latent padded to h0 x w0 is a linear map to d0*h0*w0.
        self.format = EqualizedLinear(a.input_dim, d[0] * h0 * w0)
        self.conv0 = EqualizedConv2d(d[0], d[0], 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.ModuleList([EqualizedConv2d(d[s - 1], d[s], 3, padding=1), EqualizedConv2d(d[s], d[s], 3, padding=1)])
            for s in range(1, a.n_scales)
        )
        self.to_image = nn.ModuleList(EqualizedConv2d(d[s], 1, 1) for s in range(a.n_scales))

    def _act(self, x):
        x = F.leaky_relu(x, self.a.leakyness)
        return pixel_norm(x) if self.a.pixel_norm else x

    def forward(self, z: torch.Tensor, scale: int, alpha: float = 0.0) -> torch.Tensor:
        """Latents [B, input_dim] -> images [B, 1, *scale_shapes[scale]]."""
        a, shapes = self.a, self.a.scale_shapes
        x = pixel_norm(z) if a.pixel_norm else z
        x = self._act(self.format(x)).view(z.shape[0], a.depths[0], *shapes[0])
        x = self._act(self.conv0(x))
        prev = x
        for s in range(1, scale + 1):
            prev = x
            x = resize(x, shapes[s])
            for conv in self.blocks[s - 1]:
                x = self._act(conv(x))
        y = self.to_image[scale](x)
        if scale > 0 and alpha > 0:  # fade-in: blend with the previous scale's image, upsampled
            y = alpha * resize(self.to_image[scale - 1](prev), shapes[scale]) + (1 - alpha) * y
        return y


# --- discriminator ----------------------------------------------------------------------------------------------------
class Discriminator(nn.Module):
    def __init__(self, a: GanArgs):
        super().__init__()
        self.a = a
        d, (h0, w0) = a.depths, a.scale_shapes[0]
        self.from_image = nn.ModuleList(EqualizedConv2d(1, d[s], 1) for s in range(a.n_scales))
        self.blocks = nn.ModuleList(
            nn.ModuleList([EqualizedConv2d(d[s], d[s], 3, padding=1), EqualizedConv2d(d[s], d[s - 1], 3, padding=1)])
            for s in range(1, a.n_scales)
        )
        self.conv0 = EqualizedConv2d(d[0] + int(a.minibatch_std), d[0], 3, padding=1)
        self.linear = EqualizedLinear(d[0] * h0 * w0, d[0])
        # Output 0 is the WGAN critic value; the rest are class logits per attribute (AC-GAN), when conditioned.
        self.decision = EqualizedLinear(d[0], 1 + sum(a.n_classes))

    def _act(self, x):
        return F.leaky_relu(x, self.a.leakyness)

    def _block(self, s: int, x):
        for conv in self.blocks[s - 1]:
            x = self._act(conv(x))
        return resize(x, self.a.scale_shapes[s - 1])

    def forward(self, img: torch.Tensor, scale: int, alpha: float = 0.0):
        """Images [B, 1, *scale_shapes[scale]] -> (critic [B], class logits [B, sum(n_classes)])."""
        shapes = self.a.scale_shapes
        x = self._act(self.from_image[scale](img))
        if scale > 0:
            x = self._block(scale, x)
            if alpha > 0:  # fade-in mirrors the generator: the downsampled image through the old input layer
                low = self._act(self.from_image[scale - 1](resize(img, shapes[scale - 1])))
                x = alpha * low + (1 - alpha) * x
            for s in range(scale - 1, 0, -1):
                x = self._block(s, x)
        if self.a.minibatch_std:
            x = minibatch_stddev(x)
        x = self._act(self.conv0(x))
        x = self._act(self.linear(x.flatten(1)))
        out = self.decision(x)
        return out[:, 0], out[:, 1:]


# --- the pair, the EMA copy, losses -----------------------------------------------------------------------------------
class ProgressiveGAN(nn.Module):
    """Generator, discriminator and the EMA generator; `state_dict()` is the checkpoint's `model` entry."""

    def __init__(self, a: GanArgs):
        super().__init__()
        self.args = a
        self.G = Generator(a)
        self.D = Discriminator(a)
        self.G_ema = Generator(a)
        self.G_ema.load_state_dict(self.G.state_dict())
        self.G_ema.requires_grad_(False)

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        for pe, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=False):
            pe.lerp_(p, 1.0 - decay)

    @torch.no_grad()
    def spectrogram(self, z: torch.Tensor, scale: int, alpha: float = 0.0, *, ema: bool = True) -> torch.Tensor:
        """Latents [B, input_dim] -> full-size normalised log-magnitude [B, F, N] (see to_full_spectrogram)."""
        g = self.G_ema if ema else self.G
        spec = to_full_spectrogram(g(z, scale, alpha), self.args)
        if self.args.ceiling:
            spec = torch.minimum(spec, torch.tensor(self.args.ceiling, device=spec.device, dtype=spec.dtype)[:, None])
        return spec


def spectrogram_ceiling(specs: torch.Tensor) -> list[float]:
    """Training spectrograms [M, F, N] -> per bin F the loudest value in them: the cap of sampled spectrograms.

    Why: the log-magnitude a generator makes is unbounded above, and a young one puts a few bins far above anything
    in the data at the clip's first and last frames (time padding of the convolutions); +0.5 in normalised units is
    +50 dB, so after PGHI those frames are a click that sets the clip's peak and leaves the rest 20-30 dB down
    (measured on the demo GAN: body -37 dB, last 8 ms -5 dB; capped: body -16 dB, ends -12 dB). Nothing the data
    had is lost: no training clip reaches above the cap."""
    return specs.float().amax(dim=(0, 2)).tolist()


def to_full_spectrogram(images: torch.Tensor, a: GanArgs) -> torch.Tensor:
    """Generator images at any scale [B, 1, f, n] -> [B, F, N]: upsampled to full size, Nyquist bin re-appended."""
    x = resize(images, a.scale_shapes[-1]) if images.shape[-2:] != a.scale_shapes[-1] else images
    x = x[:, 0]
    if x.shape[1] < a.n_bins:
        x = torch.cat([x, x[:, -1:].expand(-1, a.n_bins - x.shape[1], -1)], dim=1)
    return x


def to_images(spec: torch.Tensor, a: GanArgs, scale: int) -> torch.Tensor:
    """Real spectrograms [B, F, N] -> discriminator input at `scale` [B, 1, f, n] (Nyquist bin dropped)."""
    x = spec[:, None, : generated_bins(a.n_bins)]
    return resize(x, a.scale_shapes[scale])


def random_latents(
    a: GanArgs, n: int, gen: torch.Generator | None = None, *, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """n latents [n, input_dim]: N(0,1) noise, plus one-hot labels (random classes unless given [n, n_attrs])."""
    z = torch.randn(n, a.latent_dim, generator=gen)
    if not a.n_classes:
        return z
    if labels is None:
        labels = torch.stack([torch.randint(0, k, (n,), generator=gen) for k in a.n_classes], dim=1)
    return torch.cat([z, one_hot(labels, a)], dim=1)


def one_hot(labels: torch.Tensor, a: GanArgs) -> torch.Tensor:
    """Class indices [B, n_attrs] -> concatenated one-hot vectors [B, sum(n_classes)]."""
    return torch.cat([F.one_hot(labels[:, i], k).float() for i, k in enumerate(a.n_classes)], dim=1)


def _class_loss(logits: torch.Tensor, labels: torch.Tensor, a: GanArgs) -> torch.Tensor:
    loss, i = logits.new_zeros(()), 0
    for j, k in enumerate(a.n_classes):
        loss = loss + F.cross_entropy(logits[:, i : i + k], labels[:, j])
        i += k
    return loss


def d_loss(
    gan: ProgressiveGAN,
    real: torch.Tensor,
    fake: torch.Tensor,
    scale: int,
    alpha: float,
    *,
    lambda_gp: float,
    epsilon_d: float,
    labels: torch.Tensor | None = None,
    weight_condition: float = 0.0,
    gen: torch.Generator | None = None,
    t: torch.Tensor | None = None,
    critic=None,
) -> tuple[torch.Tensor, dict]:
    """WGAN-GP critic loss: D(fake) - D(real) + lambda * (|grad D(x_hat)| - 1)^2 + eps * D(real)^2 (+ AC term).

    `t` [B, 1, 1, 1] are the penalty's mixing weights (drawn from `gen` when not given: distributed training passes
    each rank its shard of the global batch's weights); `critic` is gan.D or a DDP wrapper of it."""
    D = critic or gan.D
    d_real, cls_real = D(real, scale, alpha)
    d_fake, _ = D(fake.detach(), scale, alpha)
    if t is None:
        t = torch.rand(real.shape[0], 1, 1, 1, generator=gen)  # CPU generator: resumable exactly
    t = t.to(real.device)
    x_hat = (t * real + (1 - t) * fake.detach()).requires_grad_(True)
    d_hat, _ = D(x_hat, scale, alpha)
    (grad,) = torch.autograd.grad(d_hat.sum(), x_hat, create_graph=True)
    gp = (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
    wdist = d_real.mean() - d_fake.mean()
    loss = -wdist + lambda_gp * gp + epsilon_d * d_real.pow(2).mean()
    if labels is not None and gan.args.n_classes and weight_condition > 0:
        loss = loss + weight_condition * _class_loss(cls_real, labels, gan.args)
    return loss, {"loss_d": loss.item(), "wdist": wdist.item(), "gp": gp.item()}


def g_loss(
    gan: ProgressiveGAN,
    fake: torch.Tensor,
    scale: int,
    alpha: float,
    *,
    labels: torch.Tensor | None = None,
    weight_condition: float = 0.0,
) -> tuple[torch.Tensor, dict]:
    """Generator loss: -D(fake) (+ AC classification of the labels it was asked for)."""
    d_fake, cls_fake = gan.D(fake, scale, alpha)
    loss = -d_fake.mean()
    if labels is not None and gan.args.n_classes and weight_condition > 0:
        loss = loss + weight_condition * _class_loss(cls_fake, labels, gan.args)
    return loss, {"loss_g": loss.item()}


def alpha_at(iter_in_scale: int, scale: int, n_jumps: int, size_jumps: int) -> float:
    """Linear fade-in: alpha starts at 1 on entering a scale and drops by 1/n_jumps every size_jumps iterations."""
    if scale == 0 or n_jumps == 0:
        return 0.0
    return max(0.0, 1.0 - (iter_in_scale // size_jumps) / n_jumps)
