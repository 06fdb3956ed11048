"""Training never loses more than minutes: --save-every, clear --resume errors for bad files, refused layout
changes, and metrics.jsonl without duplicated steps after a resume."""

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

from vitpose_fast.training import train as train_script
from vitpose_fast import Model  # noqa: E402
from vitpose_fast.training.core import (  # noqa: E402
    CheckpointFileError,
    SavePolicy,
    check_resume_layout,
    load_training_state,
    rescaled_position,
    save_checkpoint,
    truncate_metrics,
)


def test_bad_resume_files_are_named(tmp_path):
    weights = tmp_path / "best.pth"
    Model.from_config("vitpose_s", depth=1, embed_dim=32, num_heads=2, res=(32, 32)).save(weights)
    with pytest.raises(CheckpointFileError, match=r"best.pth.*model weights only.*last.pth.*--init"):
        load_training_state(weights)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointFileError, match=r"empty.pth.*empty \(0 bytes\)"):
        load_training_state(tmp_path / "empty.pth")
    save_checkpoint(tmp_path / "last.pth", {"model": {"w": torch.randn(64, 64)}, "step": 3})
    data = (tmp_path / "last.pth").read_bytes()
    (tmp_path / "last.pth.tmp").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFileError, match=r"last.pth.tmp.*interrupted.*'.*last.pth'"):
        load_training_state(tmp_path / "last.pth.tmp")
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFileError, match=r"cut.pth.*truncated or corrupt"):
        load_training_state(tmp_path / "cut.pth")
    (tmp_path / "notes.pth").write_text("step: 3\nloss: 0.1\n")
    with pytest.raises(CheckpointFileError, match=r"notes.pth.*text file.*'step: 3"):
        load_training_state(tmp_path / "notes.pth")
    torch.save({"args": argparse.Namespace(lr=1)}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointFileError, match=r"pickled.pth.*objects other than tensors"):
        load_training_state(tmp_path / "pickled.pth")
    with pytest.raises(CheckpointFileError, match=r"last.pth.*lacks model|lacks optimizer"):
        load_training_state(tmp_path / "last.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_training_state(tmp_path / "missing.pth")


def test_layout_change_refused_unless_allowed(tmp_path):
    state = {"world_size": 2, "global_batch": 32, "rng": [{}, {}], "epoch": 3, "batch_in_epoch": 10, "step": 310}
    assert not check_resume_layout(state, "last.pth", 2, 16, False)
    assert not check_resume_layout(state, "last.pth", 1, 32, False)  # the process count alone may change
    with pytest.raises(ValueError, match=r"2 process\(es\) x batch 16 \(global batch 32\).*1 x 16.*--allow-resume"):
        check_resume_layout(state, "last.pth", 1, 16, False)
    with pytest.raises(ValueError, match="global 64"):
        check_resume_layout(state, "last.pth", 2, 32, False)
    assert check_resume_layout(state, "last.pth", 1, 16, True)
    # Same epoch, same samples seen in it (10 x 32 = 20 x 16), step in the new units.
    assert rescaled_position(state, 1, 16, iters_per_epoch=200) == (3, 20, 620)


def test_truncate_metrics_and_save_policy(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4, 4, 5)) + '{"step": 6, "lo')
    assert truncate_metrics(path, 3) == 4
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3]
    now = [0.0]
    timed = SavePolicy("10m", clock=lambda: now[0])
    assert not timed.due(5)
    now[0] = 601.0
    assert timed.due(6)
    timed.saved(6)
    assert not timed.due(7)
    steps = SavePolicy("3")
    assert [s for s in range(1, 10) if steps.due(s) and (steps.saved(s) or True)] == [3, 6, 9]
    assert not SavePolicy(None).due(10**6)
    with pytest.raises(ValueError, match="90s, 10m"):
        SavePolicy("often")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from vitpose_fast.data.synthetic import make_synthetic_coco

    return make_synthetic_coco(tmp_path_factory.mktemp("synth"), {"train2017": 14, "val2017": 2}, seed=1,
                               image_size=(160, 120))


def _argv(synth, out, *extra):
    return ["--preset", "tiny_synthetic", "--data-root", str(synth.root), "--device", "cpu", "--workers", "0",
            "--batch-size", "8", "--out", str(out), "--no-progress", "--log-interval", "1", "--seed", "3",
            "--epochs", "3", "--eval-interval", "0", "--save-interval", "10", *map(str, extra)]


def test_save_every_resume_metrics_and_batch_change(synth, tmp_path, monkeypatch):
    saved = []
    real = train_script.save_checkpoint

    def record(path, state):
        real(path, state)
        if Path(path).name == "last.pth":
            saved.append((state["step"], state["epoch"], state["batch_in_epoch"]))
            if state["step"] == 4:
                shutil.copy(path, tmp_path / "step4.pth")

    monkeypatch.setattr(train_script, "save_checkpoint", record)
    out = tmp_path / "run"
    train_script.main(_argv(synth, out, "--save-every", "2", "--max-steps", "5"))  # 3 iterations per epoch
    assert saved == [(2, 0, 2), (4, 1, 1), (5, 1, 2)]
    ck = torch.load(tmp_path / "step4.pth", weights_only=True)
    assert (ck["world_size"], ck["global_batch"]) == (1, 8)
    # Killed after step 5, step 4 being the last checkpoint: resuming in the same folder rewrites step 5.
    train_script.main(_argv(synth, out, "--resume", tmp_path / "step4.pth"))
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 10))

    with pytest.raises(ValueError, match=r"1 process\(es\) x batch 8 \(global batch 8\); this run has 1 x 4"):
        train_script.main(_argv(synth, tmp_path / "b4", "--batch-size", "4", "--resume", tmp_path / "step4.pth"))
    summary = train_script.main(_argv(synth, tmp_path / "b4", "--batch-size", "4", "--allow-resume-change",
                                      "--resume", tmp_path / "step4.pth", "--max-steps", "10"))
    # Epoch 1 with 8 of its samples seen = batch 2 of 7 at batch 4 -> step 7 + 2 = 9; one more step to 10.
    assert summary["step"] == 10
    ck = torch.load(tmp_path / "b4" / "last.pth", weights_only=True)
    assert (ck["epoch"], ck["batch_in_epoch"], ck["global_batch"]) == (1, 3, 4)
