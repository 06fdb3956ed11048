"""1/8 features (paper Table 5): a stride-8 model loads a stride-16 checkpoint (position embedding resized
bicubically, every other tensor as is) and runs every attention preset of Table 5, reference and Triton
(interpreter) agreeing, with heatmaps at 1/4 of the input."""

import pytest
import torch
import torch.nn.functional as F

from vitpose_fast.config import TABLE5_ROWS, attention_preset
from vitpose_fast import Model

# Half the paper's 256x192 input: a 16x12 token grid at stride 8 (the paper's is 32x24), so the (8, 8) windows
# tile it 2x2 (with padding-free shift and pool) and (16, 12) is one window.
RES = (128, 96)
SMALL = dict(depth=4, embed_dim=32, num_heads=2, drop_path_rate=0.0, decoder="simple", num_keypoints=3)


def _stride16(tmp_path):
    model = Model.from_config("vitpose_s", backend="reference", res=RES, **SMALL).eval()
    with torch.no_grad():
        model.backbone.pos_embed.normal_()  # a non-trivial table, so the resize is visible
    path = tmp_path / "s16.pth"
    model.export_official(path)
    return model, path


def _resized_pos_embed(pos: torch.Tensor, src, dst) -> torch.Tensor:
    grid = pos[:, 1:].reshape(1, *src, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=dst, mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, dst[0] * dst[1], -1)], dim=1)


@pytest.mark.parametrize("source", ["file", "state_dict"])
def test_stride8_loads_a_stride16_checkpoint(tmp_path, source):
    m16, path = _stride16(tmp_path)
    src = path if source == "file" else {k: v.clone() for k, v in m16.state_dict().items()}
    m8 = Model.from_pretrained(src, backend="reference", patch_stride=8, res=RES)
    assert m16.config.backbone.grid == (8, 6) and m8.config.backbone.grid == (16, 12)
    sd16, sd8 = m16.state_dict(), m8.state_dict()
    assert set(sd16) == set(sd8)
    for k in sd16:
        if k == "backbone.pos_embed":
            torch.testing.assert_close(sd8[k], _resized_pos_embed(sd16[k], (8, 6), (16, 12)))
        else:
            assert torch.equal(sd8[k], sd16[k]), k
    x = torch.randn(1, 3, *RES)
    with torch.no_grad():
        assert m8(x).shape == (1, 3, RES[0] // 4, RES[1] // 4) == m16(x).shape


@pytest.mark.parametrize("row", list(TABLE5_ROWS))
def test_stride8_every_table5_attention_row(tmp_path, row):
    _, path = _stride16(tmp_path)
    specs = attention_preset(depth=SMALL["depth"], **TABLE5_ROWS[row])
    # strict=False: the stride-16 checkpoint has no relative-position tables (they start at zero)
    model = Model.from_pretrained(path, backend="reference", strict=False, patch_stride=8, res=RES,
                                  attention=specs)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "rel_pos" in name:
                p.normal_(std=0.5)
    x = torch.randn(1, 3, *RES)
    params = list(model.parameters())
    results = []
    for backend in ("reference", "triton"):
        model.set_backend(backend)
        out = model(x)
        results.append([out, *torch.autograd.grad(out.square().sum(), params)])
    assert results[0][0].shape == (1, 3, RES[0] // 4, RES[1] // 4)
    names = ["out"] + [n for n, _ in model.named_parameters()]
    for name, a, b in zip(names, results[1], results[0]):
        torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
