"""The per-rank training memory estimate (meta device: nothing is allocated)."""

from __future__ import annotations

import pytest
import torch

from vitpose_fast import Model
from vitpose_fast.config import preset
from vitpose_fast.training import memory


def test_memory_estimate_shards_states_not_activations():
    cfg = preset("vitpose_s", res=(256, 192))
    ddp, f1, f8 = memory.estimate_memory(cfg, 4, [1, 8], amp="bf16")
    with torch.device("meta"):
        n = sum(p.numel() for p in Model(cfg).parameters())
    assert ddp.optimizer == f1.optimizer == 8 * n and f8.optimizer == -(-8 * n // 8)
    assert ddp.activations == f8.activations > 0
    assert f8.params < ddp.params / 4
    ckpt = memory.estimate_memory(cfg, 4, [8], amp="bf16", checkpointing=True)[1]
    assert ckpt.activations < f8.activations / 3
    # Activations grow linearly with the batch.
    assert memory.estimate_memory(cfg, 8, [8])[1].activations == pytest.approx(2 * f8.activations, rel=0.01)


def test_attention_counts_flash_saves_without_replacing_sdpa_globally(monkeypatch):
    cfg = preset("vitpose_s", res=(64, 48), depth=2)
    want = memory._saved_activation_bytes(cfg, 2, torch.bfloat16)
    real = torch.nn.functional.scaled_dot_product_attention
    calls = []

    def spy(*args, **kwargs):  # what the model finds under F.scaled_dot_product_attention while estimating
        calls.append(args[0].device.type)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    got = memory._saved_activation_bytes(cfg, 2, torch.bfloat16)
    assert calls == ["meta", "meta"]  # one per block: the function was never swapped out
    assert got == want
    assert torch.nn.functional.scaled_dot_product_attention is spy
    # Flash saves q, k, v, the output and an fp32 log-sum-exp: far less than the [B, heads, N, N] probabilities.
    b, n, h = 2, cfg.backbone.grid[0] * cfg.backbone.grid[1], cfg.backbone.num_heads
    assert want["blocks"][0] < 2 * b * h * n * n * 2 + 20 * b * n * cfg.backbone.embed_dim * 2


def test_cli_prints_the_table(capsys):
    memory.main(["--model", "vitpose_s", "--res", "64", "48", "--batch", "2", "--ranks", "1", "2"])
    out = capsys.readouterr().out
    assert out.startswith("| mode | ranks |") and "| FSDP | 2 |" in out
