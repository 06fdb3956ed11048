"""Test-only oracle: a transcription of the official Sapiens pose model's forward (facebookresearch/sapiens).

The official code cannot run here: ``pretrain/mmpretrain/models/backbones/vision_transformer.py`` and
``pose/mmpose/models/heads/heatmap_heads/heatmap_head.py`` import mmcv (``FFN``, ``PatchEmbed``,
``build_conv_layer``), mmengine (``BaseModule``, registries) and the mmpretrain / mmpose packages, whose imports
pull in compiled mmcv ops. So this module re-creates, in plain PyTorch and independently of vitpose_fast, exactly
what those classes compute with the pose configs' arguments (``sapiens_*-210e_*-1024x768.py``), under the
official module names, so that ``TopdownPoseEstimator.state_dict()`` has the released checkpoints' key layout:

- ``VisionTransformer(arch, img_size=(1024, 768), patch_size=16, qkv_bias=True, final_norm=True,
  drop_path_rate=0.0, with_cls_token=False, out_type='featmap', patch_cfg=dict(padding=2))``: mmcv
  ``PatchEmbed`` (``projection`` conv, no norm), ``pos_embed`` [1, Hp*Wp, C] added after
  ``resize_pos_embed(..., mode='bicubic', num_extra_tokens=0)`` (a no-op at the configured size), no pre-norm,
  ``layers[i]`` = ``TransformerEncoderLayer`` (``ln1``, ``MultiheadAttention`` with ``qkv`` / ``proj`` on
  ``F.scaled_dot_product_attention``, ``ln2``, mmcv ``FFN`` with ``layers.0.0`` Linear + GELU and ``layers.1``
  Linear, identity added inside), LayerNorm eps 1e-6, final ``ln1``, featmap [B, C, Hp, Wp];
- ``HeatmapHead(in_channels=C, out_channels=K, deconv_out_channels=(768, 768), deconv_kernel_sizes=(4, 4),
  conv_out_channels=(768, 768), conv_kernel_sizes=(1, 1))`` with ``use_silu=True``: deconv (k4, s2, p1, no
  bias) / conv (k1, p0, bias), each followed by ``nn.InstanceNorm2d`` and ``nn.SiLU``, then ``final_layer``
  Conv2d 1x1.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

# mmpretrain VisionTransformer.arch_zoo entries of the four Sapiens sizes.
ARCHS = {
    "sapiens_0.3b": dict(embed_dims=1024, num_layers=24, num_heads=16, feedforward_channels=1024 * 4),
    "sapiens_0.6b": dict(embed_dims=1280, num_layers=32, num_heads=16, feedforward_channels=1280 * 4),
    "sapiens_1b": dict(embed_dims=1536, num_layers=40, num_heads=24, feedforward_channels=1536 * 4),
    "sapiens_2b": dict(embed_dims=1920, num_layers=48, num_heads=32, feedforward_channels=1920 * 4),
}


def resize_pos_embed(pos_embed, src_shape, dst_shape, mode="bicubic", num_extra_tokens=1):
    if src_shape[0] == dst_shape[0] and src_shape[1] == dst_shape[1]:
        return pos_embed
    _, length, c = pos_embed.shape
    src_h, src_w = src_shape
    assert length == src_h * src_w + num_extra_tokens
    extra = pos_embed[:, :num_extra_tokens]
    src = pos_embed[:, num_extra_tokens:].reshape(1, src_h, src_w, c).permute(0, 3, 1, 2)
    dst = F.interpolate(src.float(), size=dst_shape, align_corners=False, mode=mode)
    dst = torch.flatten(dst, 2).transpose(1, 2).to(src.dtype)
    return torch.cat((extra, dst), dim=1)


class PatchEmbed(nn.Module):
    def __init__(self, embed_dims: int, patch_size: int, padding: int, input_size: Tuple[int, int]):
        super().__init__()
        self.projection = nn.Conv2d(3, embed_dims, kernel_size=patch_size, stride=patch_size, padding=padding)
        self.init_out_size = tuple((n + 2 * padding - (patch_size - 1) - 1) // patch_size + 1 for n in input_size)

    def forward(self, x):
        x = self.projection(x)
        out_size = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), out_size


class MultiheadAttention(nn.Module):
    def __init__(self, embed_dims: int, num_heads: int):
        super().__init__()
        self.embed_dims, self.num_heads, self.head_dims = embed_dims, num_heads, embed_dims // num_heads
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=True)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dims).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(x.transpose(1, 2).reshape(b, n, self.embed_dims))


class FFN(nn.Module):
    def __init__(self, embed_dims: int, feedforward_channels: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, feedforward_channels), nn.GELU(), nn.Dropout(0.0)),
            nn.Linear(feedforward_channels, embed_dims), nn.Dropout(0.0),
        )

    def forward(self, x, identity):
        return identity + self.layers(x)


class TransformerEncoderLayer(nn.Module):
    def __init__(self, embed_dims: int, num_heads: int, feedforward_channels: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.attn = MultiheadAttention(embed_dims, num_heads)
        self.ln2 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.ffn = FFN(embed_dims, feedforward_channels)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return self.ffn(self.ln2(x), identity=x)


class VisionTransformer(nn.Module):
    def __init__(self, arch: dict, img_size: Tuple[int, int], patch_size: int = 16, padding: int = 2):
        super().__init__()
        c = arch["embed_dims"]
        self.patch_embed = PatchEmbed(c, patch_size, padding, img_size)
        self.patch_resolution = self.patch_embed.init_out_size
        self.num_extra_tokens = 0  # with_cls_token=False, out_type='featmap'
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_resolution[0] * self.patch_resolution[1], c))
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(c, arch["num_heads"], arch["feedforward_channels"])
            for _ in range(arch["num_layers"])
        )
        self.ln1 = nn.LayerNorm(c, eps=1e-6)

    def forward(self, x):
        b = x.shape[0]
        x, patch_resolution = self.patch_embed(x)
        x = x + resize_pos_embed(self.pos_embed, self.patch_resolution, patch_resolution, mode="bicubic",
                                 num_extra_tokens=self.num_extra_tokens)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == len(self.layers) - 1:
                x = self.ln1(x)
        return (x.reshape(b, *patch_resolution, -1).permute(0, 3, 1, 2),)


class HeatmapHead(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, deconv_out_channels: Sequence[int] = (768, 768),
                 conv_out_channels: Sequence[int] = (768, 768)):
        super().__init__()
        layers = []
        for out in deconv_out_channels:
            layers += [nn.ConvTranspose2d(in_channels, out, kernel_size=4, stride=2, padding=1, output_padding=0,
                                          bias=False), nn.InstanceNorm2d(out), nn.SiLU(inplace=True)]
            in_channels = out
        self.deconv_layers = nn.Sequential(*layers)
        layers = []
        for out in conv_out_channels:
            layers += [nn.Conv2d(in_channels, out, kernel_size=1, stride=1, padding=0), nn.InstanceNorm2d(out),
                       nn.SiLU(inplace=True)]
            in_channels = out
        self.conv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, feats):
        return self.final_layer(self.conv_layers(self.deconv_layers(feats[-1])))


class TopdownPoseEstimator(nn.Module):
    """``backbone`` + ``head`` as the pose configs build them; forward = the head's heatmaps (``_forward``)."""

    def __init__(self, arch: dict, num_keypoints: int, img_size=(1024, 768), deconv=(768, 768), conv=(768, 768)):
        super().__init__()
        self.backbone = VisionTransformer(arch, img_size)
        self.head = HeatmapHead(arch["embed_dims"], num_keypoints, deconv, conv)

    def forward(self, x):
        return self.head(self.backbone(x))
