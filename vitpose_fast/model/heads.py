"""Keypoint heads (official ``TopdownHeatmapSimpleHead``), with the official parameter names.

- classic: ``deconv_layers`` = [ConvTranspose2d(C->256, 4, s2, p1, no bias), BN, ReLU] x 2, then
  ``final_layer`` = Conv2d(256 -> K, 1x1). No activation on the backbone output before the first deconv.
  Sapiens' ``HeatmapHead`` (``conv_channels=(768, 768)``, ``norm_act="in_silu"``): [deconv C->768, IN, SiLU],
  [deconv 768->768, IN, SiLU], then ``conv_layers`` = [Conv2d(768->768, 1x1, bias), IN, SiLU] x 2, then
  ``final_layer``; IN is InstanceNorm2d(eps 1e-5, no affine, no running statistics), so it normalises each
  sample with its own statistics in training and inference alike (nothing to fold).
- simple: ReLU, bilinear x4 (align_corners=False), ``final_layer`` = Conv2d(C -> K, 3x3, padding 1); the whole
  head is one op (:func:`vitpose_fast.ops.simple_decoder`) so the Triton backend never builds the upsampled map.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vitpose_fast import ops
from vitpose_fast.config import HeadConfig


class ClassicHead(nn.Module):
    """With ``fold_batchnorm`` (set by :meth:`vitpose_fast.Model.optimize`), eval mode on a non-reference backend
    runs each [deconv, BN, ReLU] as one deconvolution with the BatchNorm folded into its weight and bias
    (w' = w * gamma / sqrt(var + eps) per output channel, b' = beta - mean * gamma / sqrt(var + eps), computed in
    fp32 from the current parameters: at every call on GPU, a few microseconds, and inside a captured CUDA graph
    so that replays read the current weights; on CPU, where it costs as much as a deconvolution, once per
    version of the parameters, so it is never stale either) followed by an in-place ReLU. On CPU the maps run
    channels-last: the backbone's [B, C, Hp, Wp] view of its tokens already has that layout, and oneDNN's bf16
    deconvolution measured up to 3x faster on it. Training always runs the real BatchNorm."""

    def __init__(self, in_channels: int, cfg: HeadConfig, upsample: int = 4):
        super().__init__()
        self.fold_batchnorm = False
        self.norm_act = cfg.norm_act
        layers = []
        c = in_channels
        channels = cfg.deconv_channels
        if 2 ** len(channels) != upsample:
            # Each deconv doubles the map; at 1/8 features one deconv reaches the 1/4 heatmaps.
            channels = (channels[0],) * max(upsample.bit_length() - 1, 0)
        for out in channels:
            layers += [nn.ConvTranspose2d(c, out, kernel_size=4, stride=2, padding=1, output_padding=0, bias=False),
                       *_norm_act(cfg.norm_act, out)]
            c = out
        self.deconv_layers = nn.Sequential(*layers)
        convs = []
        for out in cfg.conv_channels:
            convs += [nn.Conv2d(c, out, kernel_size=1), *_norm_act(cfg.norm_act, out)]
            c = out
        # Absent (not an empty Sequential) without convs, so ViTPose state dicts and modules stay as they were.
        self.conv_layers = nn.Sequential(*convs) if convs else None
        self.final_layer = nn.Conv2d(c, cfg.num_keypoints, kernel_size=1)
        self._folded = {}  # CPU: deconv index -> (parameter versions, folded weight, folded bias)

    @torch.no_grad()
    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, backend: str = "torch") -> torch.Tensor:
        if self.norm_act != "bn_relu" or self.training or not self.fold_batchnorm or backend == "reference":
            x = self.deconv_layers(x)
            if self.conv_layers is not None:
                x = self.conv_layers(x)
            return self.final_layer(x)
        layers = list(self.deconv_layers)
        cpu = x.device.type == "cpu"
        if cpu:
            x = x.contiguous(memory_format=torch.channels_last)
        for i, (deconv, bn) in enumerate(zip(layers[0::3], layers[1::3])):
            weight, bias = self._folded_on_cpu(i, deconv, bn) if cpu else folded_deconv(deconv, bn)
            x = F.conv_transpose2d(x, weight, bias, deconv.stride, deconv.padding, deconv.output_padding,
                                   deconv.groups, deconv.dilation)
            x = F.relu_(x)
        if self.conv_layers is not None:
            x = self.conv_layers(x)
        out = self.final_layer(x)
        return out.contiguous() if cpu else out

    def _folded_on_cpu(self, i: int, deconv: nn.ConvTranspose2d, bn: nn.BatchNorm2d):
        # In-place updates (load_state_dict, an optimiser step) bump a tensor's version; .to() makes new tensors.
        params = (deconv.weight, deconv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in params if t is not None)
        hit = self._folded.get(i)
        if hit is None or hit[0] != key:
            hit = self._folded[i] = (key, *folded_deconv(deconv, bn))
        return hit[1], hit[2]


def _norm_act(kind: str, channels: int) -> list:
    if kind == "in_silu":
        # Sapiens: nn.InstanceNorm2d's defaults (affine=False, track_running_stats=False): no parameters.
        return [nn.InstanceNorm2d(channels), nn.SiLU(inplace=True)]
    return [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


def folded_deconv(deconv: nn.ConvTranspose2d, bn: nn.BatchNorm2d):
    """(weight, bias) of ``deconv`` followed by ``bn`` in eval mode as one ConvTranspose2d (weight [in, out, kh, kw]:
    the output channel is dim 1), in the deconv weight's dtype."""
    scale = bn.weight.float() * torch.rsqrt(bn.running_var.float() + bn.eps)
    weight = (deconv.weight.float() * scale.view(1, -1, 1, 1)).to(deconv.weight.dtype)
    bias = bn.bias.float() - bn.running_mean.float() * scale
    if deconv.bias is not None:
        bias = bias + deconv.bias.float() * scale
    return weight, bias.to(deconv.weight.dtype)


class SimpleHead(nn.Module):
    def __init__(self, in_channels: int, cfg: HeadConfig, upsample: int = 4):
        super().__init__()
        self.upsample = upsample
        self.final_layer = nn.Conv2d(in_channels, cfg.num_keypoints, kernel_size=3, padding=1)

    @torch.no_grad()
    def init_weights(self) -> None:
        nn.init.normal_(self.final_layer.weight, std=0.001)
        nn.init.zeros_(self.final_layer.bias)

    def forward(self, x: torch.Tensor, backend: str = "torch") -> torch.Tensor:
        return ops.simple_decoder(
            x, self.final_layer.weight, self.final_layer.bias, backend=backend, scale=self.upsample
        )


def build_head(in_channels: int, cfg: HeadConfig, upsample: int = 4) -> nn.Module:
    """``upsample``: heatmap size over the feature map size (4 at 1/16 features, 2 at 1/8)."""
    return SimpleHead(in_channels, cfg, upsample) if cfg.kind == "simple" else ClassicHead(in_channels, cfg, upsample)
