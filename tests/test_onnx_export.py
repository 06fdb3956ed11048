"""ONNX export checked with ONNX Runtime on CPU: fp32 parity for batch 1 and 3, both decoders, ViTPose+."""

import sys
import warnings

import numpy as np
import pytest
import torch

from vitpose_fast import Model, cli
from vitpose_fast.model.onnx_export import OnnxExportError, check_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TINY = dict(depth=1, embed_dim=64, num_heads=2, res=(64, 48), deconv_channels=(16, 16))


def _randomize(model):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def test_simple_decoder_dynamic_batch_matches_pytorch(tmp_path, monkeypatch):
    # A model left at "auto" with the Triton backend requested: the export must still trace the torch path.
    monkeypatch.setenv("VITPOSE_FAST_BACKEND", "triton")
    model = _randomize(Model.from_config("vitpose_s", decoder="simple", num_keypoints=5, **TINY))
    path = model.export_onnx(tmp_path / "simple.onnx")
    assert model.backend == "auto"
    graph = onnx.load(path).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 64, 48]  # symbolic batch
    monkeypatch.setenv("VITPOSE_FAST_BACKEND", "reference")  # the oracle path as the comparison
    errors = check_onnx(model, path, batches=(1, 3))
    assert set(errors) == {1, 3} and max(errors.values()) < 1e-4, errors
    # A run by hand, the README's way.
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 48), dtype=np.float32)
    (heatmaps,) = session.run(["heatmaps"], {"pixel_values": x})
    assert heatmaps.shape == (2, 5, 16, 12)


def test_cli_export_vitpose_plus_classic_with_res_and_dataset(tmp_path, capsys):
    model = _randomize(Model.from_config("vitpose_s", num_experts=3, part_features=16, extra_heads=(14, 16), **TINY))
    weights = tmp_path / "plus.pth"
    model.save(weights)
    out = tmp_path / "plus.onnx"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = cli.main(["export", "--onnx", str(out), "--weights", str(weights), "--res", "80x64",
                       "--dataset-index", "1", "--check"])
    assert rc == 0
    assert not [w for w in caught if "training mode" in str(w.message)]  # the exported wrapper is in eval mode
    text = capsys.readouterr().out
    assert "batch 1:" in text and "batch 3:" in text
    loaded = Model.from_pretrained(weights, res=(80, 64))  # what the CLI exported (pos_embed resized)
    errors = check_onnx(loaded, out, batches=(1, 3), dataset_index=1)
    assert max(errors.values()) < 1e-4, errors
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (heatmaps,) = session.run(None, {"pixel_values": np.zeros((3, 3, 80, 64), np.float32)})
    assert heatmaps.shape == (3, 14, 20, 16)  # dataset 1's head


def test_what_cannot_be_exported(tmp_path, monkeypatch):
    plus = Model.from_config("vitpose_s", num_experts=2, part_features=16, **TINY)
    with pytest.raises(OnnxExportError, match="pass dataset_index"):
        plus.export_onnx(tmp_path / "x.onnx")
    with pytest.raises(OnnxExportError, match="out of range"):
        plus.export_onnx(tmp_path / "x.onnx", dataset_index=2)
    with pytest.raises(OnnxExportError, match="per-sample dataset indices"):
        plus.export_onnx(tmp_path / "x.onnx", dataset_index=torch.tensor([0, 1]))
    plain = Model.from_config("vitpose_s", **TINY)
    with pytest.raises(OnnxExportError, match="batch must be"):
        plain.export_onnx(tmp_path / "x.onnx", batch=0)
    with pytest.raises(OnnxExportError, match="opset 13"):
        plain.export_onnx(tmp_path / "x.onnx", opset=13)

    def failing_export(*args, **kwargs):
        raise RuntimeError("Unsupported: data-dependent control flow")

    plain.set_backend("reference")
    monkeypatch.setattr(torch.onnx, "export", failing_export)
    with pytest.raises(OnnxExportError, match="cannot export this model.*data-dependent"):
        plain.export_onnx(tmp_path / "x.onnx")
    assert plain.backend == "reference"  # restored after a failure too
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ImportError, match="pip install onnx onnxscript"):
        plain.export_onnx(tmp_path / "x.onnx")
    with pytest.raises(SystemExit, match="pip install onnx onnxscript"):
        plain.save(tmp_path / "w.pth")
        cli.main(["export", "--onnx", str(tmp_path / "x.onnx"), "--weights", str(tmp_path / "w.pth")])
