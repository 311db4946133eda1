"""DCGAN for small grayscale images: the seed's architecture, ported to PyTorch with its bugs fixed.

References:
- Radford, Metz, Chintala, "Unsupervised Representation Learning with Deep Convolutional
  Generative Adversarial Networks" (2015), arXiv:1511.06434.
- The seed's Keras code (section 5.2), fixed here: the generator emits 1 channel (not 3), the
  discriminator returns a logit to be used with BCE-with-logits (the seed applied probability
  BCE to an unbounded Dense(1)), and the generator runs once per training step.

Generator: Linear(z -> 7*7*W, no bias) -> BN -> LeakyReLU(0.2) -> 3 x [ConvTranspose 5x5,
W channels, strides 1, 2, 2 -> BN -> LeakyReLU(0.2)] -> Conv 5x5 to 1 channel -> tanh.
Discriminator: Conv 64 5x5/2 -> LeakyReLU(0.2) -> Dropout(0.3) -> Conv 128 5x5/2 -> LeakyReLU(0.2)
-> Dropout(0.3) -> Linear to one logit. The seed's widths are W=128 and (64, 128).

Class-conditional (`conditional=True`, `num_classes` K filled in from the training data):
- Mirza, Osindero, "Conditional Generative Adversarial Nets" (2014), arXiv:1411.1784: the
  generator takes a label beside z. Here a small learned embedding (K, K), N(0, 1) like z,
  concatenated to z: K label inputs beside z_dim noise inputs. A (K, z_dim) embedding, as many
  label inputs as noise ones, made the generator ignore z within a class (cpu-conditional on the
  digits, 500 steps: mean pairwise L2 of one label's images 1.6 against 6.9 for real ones, and
  falling); with (K, K) it stays near 5, as an unconditional model's per-class spread at the
  same step, with the label still recognized (issue 18). After the linear layer the label is a
  per-class shift of the 7x7 features that BatchNorm keeps (a batch mixes classes), and the
  inference form folds it into a per-class bias.
- Miyato, Koyama, "cGANs with Projection Discriminator" (ICLR 2018), arXiv:1802.05637: the
  discriminator's logit gains <embed(y), h> with h its last features, i.e. a per-class linear
  head on top of the shared one; it rates "real and of class y" rather than learning from label
  maps at the input, the robust choice of the cGAN literature.
An unconditional model (the default) has exactly the parameters and state dict it always had.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from pydantic.dataclasses import dataclass
from torch import nn
from torch.nn import functional as F

from aigc_core.config_types import (
    CONFIG,
    BelowOne,
    Bool,
    DerivedInt,
    PositiveInt,
    Probability,
    class_count,
)


@dataclass(frozen=True, config=CONFIG)
class DCGANConfig:
    z_dim: PositiveInt = 100
    g_width: PositiveInt = 128
    """channels of every generator conv block (the seed: 128)"""
    d_width: PositiveInt = 64
    """channels of the first discriminator conv; the second has twice as many"""
    image_size: PositiveInt = 28
    """height and width, a multiple of 4"""
    channels: PositiveInt = 1
    bn_momentum: Probability = 0.2
    """torch convention (the weight of the new batch statistic)"""
    dropout: BelowOne = 0.3
    conditional: Bool = False
    """class-conditional: generator and discriminator take labels (a *-conditional preset)"""
    num_classes: DerivedInt = 0
    """classes of a conditional model, filled in from the training data (0: unconditional)"""

    def __post_init__(self):
        if self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {self.image_size}")
        if self.num_classes and not self.conditional:
            raise ValueError(
                f"num_classes={self.num_classes} is for a conditional model: set conditional"
            )

    def to_dict(self) -> dict:
        return {"family": "dcgan", **asdict(self)}


def _up_block(c_in: int, c_out: int, stride: int, momentum: float) -> list[nn.Module]:
    return [
        nn.ConvTranspose2d(c_in, c_out, 5, stride, 2, output_padding=stride - 1, bias=False),
        nn.BatchNorm2d(c_out, momentum=momentum),
        nn.LeakyReLU(0.2),
    ]


def check_labels(labels: torch.Tensor | None, num_classes: int, what: str) -> None:
    """Labels must be given to a conditional module, and only to one."""
    if num_classes and labels is None:
        raise ValueError(
            f"this {what} is conditional ({num_classes} classes): pass labels, (B,) int64"
        )
    if not num_classes and labels is not None:
        raise ValueError(f"this {what} is unconditional: call it without labels")


class Generator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        w, s, k = cfg.g_width, cfg.image_size // 4, class_count(cfg)
        z_in = cfg.z_dim + k  # z, then the label's embedding (K values; none unconditional)
        self.net = nn.Sequential(
            nn.Linear(z_in, s * s * w, bias=False),  # (B, s*s*W)
            nn.BatchNorm1d(s * s * w, momentum=cfg.bn_momentum),
            nn.LeakyReLU(0.2),
            nn.Unflatten(1, (w, s, s)),  # (B, W, 7, 7)
            *_up_block(w, w, 1, cfg.bn_momentum),  # (B, W, 7, 7)
            *_up_block(w, w, 2, cfg.bn_momentum),  # (B, W, 14, 14)
            *_up_block(w, w, 2, cfg.bn_momentum),  # (B, W, 28, 28)
            TapConv2d(w, cfg.channels, 5, 1, 2, bias=False),  # (B, C, 28, 28)
            nn.Tanh(),
        )
        if k:  # after the network: an unconditional model draws the same initial weights
            self.embed = nn.Embedding(k, k)  # (K, K), N(0, 1) like z: z dominates

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, z) and labels (B,) int64 of a conditional model -> (B, C, H, W) in [-1, 1]."""
        check_labels(labels, self.cfg.num_classes, "generator")
        if labels is not None:
            z = torch.cat([z, self.embed(labels).to(z.dtype)], dim=1)  # (B, z + K)
        return self.net(z)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """n images in [0, 1], (n, C, H, W), in eval mode (BatchNorm running statistics);
        labels (n,) for a conditional generator."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        z = torch.randn(n, self.cfg.z_dim, generator=generator, device="cpu").to(device)
        labels = None if labels is None else labels.to(device)
        out = (self(z, labels).float() + 1) / 2
        self.train(was_training)
        return out

    def for_inference(self, dtype: torch.dtype = torch.float32) -> InferenceGenerator:
        """The same function in eval mode, rearranged for fast batched inference."""
        return InferenceGenerator(self, dtype)


def _conv_by_taps(x: torch.Tensor, taps: torch.Tensor, k: int) -> torch.Tensor:
    """A stride-1 "same" k x k convolution of x (B, W, H, W') given its per-tap weights
    (C*k*k, W, 1, 1) from `_taps`: a 1x1 convolution to the taps' partial sums, then `fold`
    (col2im) adds each tap's sums at its offset. Returns float32 (B, C, H, W')."""
    n, _, h, w = x.shape
    cols = F.conv2d(x, taps).to(torch.float32, memory_format=torch.contiguous_format)
    return _Fold.apply(cols.view(n, -1, h * w), (h, w), k)


class _Fold(torch.autograd.Function):
    """`F.fold` (stride 1, "same" padding: (B, C*k*k, H*W) -> (B, C, H, W)) whose backward
    gathers the k x k windows through strided views and one copy. fold's own backward,
    `im2col`, is a scalar loop: 11 ms for C=1, k=5, 28x28, batch 128 on one thread of the
    project's CPU, against 3 ms here; with two threads under load it took a tenth of a DCGAN
    training step. The same values either way (tests/unit/test_dcgan_fold.py)."""

    @staticmethod
    def forward(ctx, cols: torch.Tensor, size: tuple[int, int], k: int) -> torch.Tensor:
        ctx.k = k
        return F.fold(cols, size, k, padding=k // 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _unfold(grad, ctx.k), None, None


def _unfold(x: torch.Tensor, k: int) -> torch.Tensor:
    """`F.unfold(x, k, padding=k // 2)`: (B, C, H, W) -> (B, C*k*k, H*W), columns (c, i, j)."""
    n, c, h, w = x.shape
    p = k // 2
    windows = F.pad(x, (p, p, p, p)).unfold(2, k, 1).unfold(3, k, 1)  # (B, C, H, W, k, k)
    return windows.permute(0, 1, 4, 5, 2, 3).reshape(n, c * k * k, h * w)


def _taps(weight: torch.Tensor) -> torch.Tensor:
    """(C, W, k, k) conv weights -> (C*k*k, W, 1, 1), in fold's column order (c, i, j); fold
    adds column (i, j) at offset (i, j) - k//2, the flipped kernel's tap."""
    return weight.flip(-1, -2).permute(0, 2, 3, 1).reshape(-1, weight.shape[1])[:, :, None, None]


class TapConv2d(nn.Conv2d):
    """nn.Conv2d (stride 1, "same" padding) to few output channels, computed by taps.

    oneDNN's kernels are slow with 1 to 3 output channels; as a 1x1 convolution to C*k*k
    partial sums plus `fold`, the same products and sums take about half the time forward and
    backward (C=1, W=128, batch 128, bf16, on the project's CPU). Same parameters, same state
    dict, same function as nn.Conv2d (tests/unit/test_dcgan.py). Elsewhere than on the CPU it
    is nn.Conv2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        taps = _taps(self.weight).contiguous(memory_format=torch.channels_last)
        return _conv_by_taps(x, taps, self.kernel_size[0]).to(x.dtype)


class Dropout16(nn.Dropout):
    """nn.Dropout whose mask on the CPU comes from 16-bit random integers: `bernoulli_`, which
    nn.Dropout uses, took 13% of a DCGAN training step on the project's CPU, 16-bit draws a
    quarter of that. An element is dropped with probability round(p * 2**15) / 2**15 (0.3 ->
    0.29999). Same as nn.Dropout elsewhere and in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        bits = torch.empty_like(x, dtype=torch.int16).random_()  # uniform in [0, 2**15)
        keep = bits >= round(self.p * 2**15)
        scale = torch.where(keep, 1 / (1 - self.p), 0.0).to(x.dtype)
        return x * scale


def _fold_bn(weight: torch.Tensor, bn: nn.BatchNorm1d | nn.BatchNorm2d, out_dim: int):
    """(weight, bias) of a bias-free layer followed by eval-mode BatchNorm, as one layer;
    out_dim is the weight's output-channel dimension."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
    shape = [1] * weight.ndim
    shape[out_dim] = -1
    return weight * scale.view(shape), bn.bias - bn.running_mean * scale


class InferenceGenerator(nn.Module):
    """A trained Generator rearranged for inference; equal to `Generator.eval()` up to
    floating-point rounding (tests/unit/test_dcgan.py).

    - each BatchNorm (running statistics) is folded into the layer before it, so a block is one
      transposed convolution with bias followed by an in-place LeakyReLU;
    - the weights are stored once in `dtype` (bf16 on CPUs with AVX-512 BF16) and channels-last,
      instead of being cast on every call by autocast;
    - the last 5x5 convolution to C channels runs by taps, as in TapConv2d, with the taps
      computed once (on every device: it is the slow case for oneDNN, and fine elsewhere);
    - a conditional generator's label embedding times its columns of the first layer is a
      per-class bias (K, s*s*W), computed once: the first layer takes z alone.
    """

    @torch.no_grad()  # plain tensors, not parts of the generator's autograd graph
    def __init__(self, g: Generator, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.cfg, self.dtype = g.cfg, dtype
        net = g.net
        w, b = _fold_bn(net[0].weight, net[1], out_dim=0)  # (s*s*W, z [+ K]), (s*s*W,)
        self.class_bias = None
        if g.cfg.num_classes:
            z = g.cfg.z_dim
            self.class_bias = (g.embed.weight @ w[:, z:].T + b).to(dtype)  # (K, s*s*W)
            w = w[:, :z]
        self.linear = (w.to(dtype), b.to(dtype))  # (s*s*W, z), (s*s*W,)
        self.blocks = []  # (weight (W_in, W_out, 5, 5), bias, stride, output_padding)
        for i in (4, 7, 10):
            ct: nn.ConvTranspose2d = net[i]
            w, b = _fold_bn(ct.weight, net[i + 1], out_dim=1)
            w = w.to(dtype).contiguous(memory_format=torch.channels_last)
            self.blocks.append((w, b.to(dtype), ct.stride, ct.output_padding))
        last: nn.Conv2d = net[13]  # (C, W, 5, 5), padding 2
        self.k = last.kernel_size[0]
        self.taps = _taps(last.weight).to(dtype).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, z) and labels (B,) of a conditional model -> (B, C, H, W) float32 in [-1, 1]."""
        check_labels(labels, self.cfg.num_classes, "generator")
        s, width = self.cfg.image_size // 4, self.cfg.g_width
        if labels is None:
            x = F.linear(z.to(self.dtype), *self.linear)  # (B, s*s*W)
        else:
            x = F.linear(z.to(self.dtype), self.linear[0]) + self.class_bias[labels]
        x = F.leaky_relu_(x, 0.2)
        x = x.view(-1, width, s, s).contiguous(memory_format=torch.channels_last)
        for w, b, stride, out_pad in self.blocks:
            x = F.leaky_relu_(F.conv_transpose2d(x, w, b, stride, 2, out_pad), 0.2)
        return torch.tanh_(_conv_by_taps(x, self.taps, self.k))


class Discriminator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        w, s, k = cfg.d_width, cfg.image_size // 4, class_count(cfg)
        self.net = nn.Sequential(
            nn.Conv2d(cfg.channels, w, 5, 2, 2),  # (B, W, 14, 14)
            nn.LeakyReLU(0.2),
            Dropout16(cfg.dropout),
            nn.Conv2d(w, 2 * w, 5, 2, 2),  # (B, 2W, 7, 7)
            nn.LeakyReLU(0.2),
            Dropout16(cfg.dropout),
            nn.Flatten(),
            nn.Linear(2 * w * s * s, 1),  # (B, 1) logit
        )
        if k:  # the projection: a class's vector dotted with the last features
            self.embed = nn.Embedding(k, 2 * w * s * s)  # (K, 2W*s*s)
            nn.init.xavier_uniform_(self.embed.weight)  # as Miyato and Koyama's code

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) and labels (B,) of a conditional model -> (B, 1) logits."""
        check_labels(labels, self.cfg.num_classes, "discriminator")
        if labels is None:
            return self.net(x)
        h = x
        for layer in self.net[:-1]:
            h = layer(h)  # ... (B, 2W*s*s)
        proj = (self.embed(labels) * h.float()).sum(dim=1, keepdim=True)  # (B, 1)
        return self.net[-1](h) + proj
