"""``train/train.py --fsdp`` (FSDP2) on CPU with gloo: two sharded processes train as one plain process with the
same global batch; sharded (DCP) checkpoints resume mid-epoch exactly, on another process count, survive a crash
while being written, consolidate into weights that ``Model.from_pretrained`` loads and load there directly; a
run stopped by ``--max-steps`` leaves its weights in ``final.pth``; no FSDP warning about views; evaluation and a
two-node (localhost) rendezvous; the memory estimate.

The torchrun runs are shared between tests through module-scoped fixtures (each launch costs seconds)."""

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parent.parent

from vitpose_fast.training import train as train_script
from vitpose_fast import Model  # noqa: E402
from vitpose_fast.training import distributed as vf_dist  # noqa: E402

TRAIN_PY = str(REPO / "train" / "train.py")
STEPS = 21  # 7 epochs of 3 iterations; step 10 is mid-epoch (epoch 3, batch 1)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield
    if dist.is_initialized():  # a run that raised inside main() leaves its group of one behind
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def module_one_thread():
    """``one_thread`` for the module-scoped runs, which are set up before any function-scoped fixture: runs they
    are compared with exactly (the crash test's) train with one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from vitpose_fast.data.synthetic import make_synthetic_coco

    # ~30 train persons -> 3 iterations of 8 per epoch.
    return make_synthetic_coco(tmp_path_factory.mktemp("synth"), {"train2017": 14, "val2017": 4}, seed=1,
                               image_size=(160, 120))


def _args(synth, out, batch=8, *extra):
    # The simple head (no BatchNorm) and no drop path: only reduction order differs between process counts.
    return ["--preset", "tiny_synthetic", "--data-root", str(synth.root), "--device", "cpu", "--workers", "0",
            "--batch-size", str(batch), "--out", str(out), "--no-progress", "--log-interval", "1", "--seed", "3",
            "--deterministic", "--head", "simple", "--drop-path", "0", "--epochs", "7", "--eval-interval", "0",
            *extra]


def _losses(out):
    records = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _close(a, b, rtol=1e-5):
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    worst = max(abs(a[k] - b[k]) / abs(b[k]) for k in a)
    assert worst <= rtol, f"largest relative loss difference {worst:.2e}"


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1")


def _torchrun(nproc, argv, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           TRAIN_PY, *argv]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _assert_no_view_warning(proc.stdout + proc.stderr)


VIEW_WARNING = "returned a view tensor"  # FSDP2's warning about a wrapped module's outputs


def _assert_no_view_warning(log):
    assert VIEW_WARNING not in log, log[log.index(VIEW_WARNING) - 200:][:600]


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def single(synth, tmp_path_factory, module_one_thread):
    """One plain process, batch 8, the whole run."""
    out = tmp_path_factory.mktemp("single")
    train_script.main(_args(synth, out))
    return out


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(argv, timeout=240):
    """Two torchrun launches of one process each meeting at a c10d rendezvous endpoint, as on two machines."""
    port = _free_port()
    # The README's multi-machine command: the c10d rendezvous assigns the node ranks.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
           "--rdzv_backend", "c10d", "--rdzv_id", "fsdp_test", "--rdzv_endpoint", f"127.0.0.1:{port}", TRAIN_PY, *argv]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs[0][-3000:] + logs[1][-3000:]
    for log in logs:
        _assert_no_view_warning(log)


@pytest.fixture(scope="module")
def two(synth, tmp_path_factory):
    """Two FSDP processes, batch 4 each: on two "nodes" (localhost) up to step 10, mid-epoch, evaluated after
    epoch 3 (a copy of that run is kept as ``at10``); then resumed to the end by two processes of one node in the
    same folder."""
    root = tmp_path_factory.mktemp("two")
    out, at10 = root / "run", root / "at10"
    argv = _args(synth, out, 4, "--fsdp", "--max-steps", "10", "--use-gt-bbox")
    argv[argv.index("--eval-interval") + 1] = "3"
    _two_nodes(argv)
    shutil.copytree(out, at10, symlinks=True)
    _torchrun(2, _args(synth, out, 4, "--fsdp", "--resume", str(out / "last.dcp")))
    return {"out": out, "at10": at10}


def test_two_fsdp_processes_on_two_nodes_match_one_plain_process(single, two):
    ref = _losses(single)
    assert sorted(ref) == list(range(1, STEPS + 1))
    # Steps 1-10 from the first launch, 11-21 from the resumed one: both match the uninterrupted plain run.
    _close(_losses(two["out"]), ref)
    assert _losses(two["at10"]).keys() == set(range(1, 11))
    state = vf_dist.read_train_state(two["at10"] / "last.dcp")
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (10, 3, 1)
    assert (state["world_size"], state["global_batch"], len(state["rng"])) == (2, 8, 2)


def test_consolidated_weights_equal_the_training_state_and_load(single, two, tmp_path):
    final = _weights(two["out"] / "final.pth")  # gathered from the live sharded model at the end
    exported = tmp_path / "w.pth"  # from the files, on one process without a group, through the command line
    vf_dist.main(["consolidate", str(two["out"] / "last.dcp"), str(exported)])
    assert vf_dist.read_train_state(two["out"] / "last.dcp")["step"] == STEPS
    loaded = Model.from_pretrained(exported).state_dict()
    assert final.keys() == loaded.keys()
    for k in final:
        assert torch.equal(final[k], loaded[k]), k
    # Model.from_pretrained reads the folder itself (the link and its target), on one process.
    for folder in (two["out"] / "last.dcp", two["out"] / "sharded" / f"step_{STEPS:08d}"):
        direct = Model.from_pretrained(folder).state_dict()
        assert direct.keys() == final.keys() and all(torch.equal(direct[k], final[k]) for k in final), folder
    plain = _weights(single / "final.pth")
    for k in plain:
        torch.testing.assert_close(final[k], plain[k], rtol=0, atol=1e-4, msg=k)
    # Older checkpoints are pruned once the newest is in place.
    assert [p.name for p in (two["out"] / "sharded").iterdir()] == [f"step_{STEPS:08d}"]


def test_a_run_stopped_by_max_steps_leaves_its_weights(two):
    """The two-node launch stopped at step 10 by --max-steps: final.pth holds the weights of step 10, the same as
    its sharded checkpoint, and loads; the resumed run then ended with other weights in its own final.pth."""
    stopped = _weights(two["at10"] / "final.pth")
    dcp = Model.from_pretrained(two["at10"] / "last.dcp").state_dict()
    assert stopped.keys() == dcp.keys() and all(torch.equal(stopped[k], dcp[k]) for k in dcp)
    assert Model.from_pretrained(two["at10"] / "final.pth").config.backbone.depth == 6
    ended = _weights(two["out"] / "final.pth")
    assert any(not torch.equal(stopped[k], ended[k]) for k in stopped)


def test_sharded_blocks_return_fresh_tensors():
    """FSDP2 warns about every view a wrapped module returns (an in-place op on one would skip the pre-backward
    all-gather); the torch backend's Linear of a 3-D input gives one. The blocks hand on fresh tensors instead,
    with the plain model's outputs and gradients."""
    cpu = torch.device("cpu")
    plain = Model.from_config("vitpose_s", depth=2, embed_dim=64, num_heads=2, res=(64, 48), backend="torch").eval()
    sharded = copy.deepcopy(plain)
    vf_dist.ensure_process_group(cpu)
    vf_dist.shard_model(sharded, cpu)
    x = torch.randn(2, 3, 64, 48)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = sharded(x)
        out.square().mean().backward()
    assert not [w for w in caught if VIEW_WARNING in str(w.message)]
    ref = plain(x)
    ref.square().mean().backward()
    assert torch.equal(out, ref)
    for (name, p), q in zip(sharded.named_parameters(), plain.parameters()):
        assert torch.equal(p.grad.full_tensor(), q.grad), name


def test_two_process_checkpoint_resumes_on_one(synth, single, two, tmp_path):
    train_script.main(_args(synth, tmp_path, 8, "--fsdp", "--resume", str(two["at10"] / "last.dcp")))
    resumed = _losses(tmp_path)
    assert sorted(resumed) == list(range(11, STEPS + 1))
    _close(resumed, {k: v for k, v in _losses(single).items() if k > 10})


@pytest.fixture(scope="module")
def one_fsdp(synth, tmp_path_factory, module_one_thread):
    """One FSDP process: 6 steps straight, and 4 steps (mid-epoch 2) then resumed to 6."""
    root = tmp_path_factory.mktemp("one_fsdp")
    train_script.main(_args(synth, root / "full", 8, "--fsdp", "--max-steps", "6"))
    train_script.main(_args(synth, root / "part", 8, "--fsdp", "--max-steps", "4"))
    shutil.copytree(root / "part", root / "at4", symlinks=True)
    train_script.main(_args(synth, root / "part", 8, "--fsdp", "--max-steps", "6", "--resume",
                            str(root / "part" / "last.dcp")))
    return root


def test_mid_epoch_resume_is_exact(one_fsdp):
    full, part = _losses(one_fsdp / "full"), _losses(one_fsdp / "part")
    assert sorted(part) == list(range(1, 7))
    assert part == full


def test_crash_while_writing_leaves_the_previous_checkpoint(synth, one_fsdp, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(one_fsdp / "at4", out, symlinks=True)

    def crash(tmp, final):
        raise RuntimeError("simulated crash between writing the shards and renaming them")

    monkeypatch.setattr(vf_dist, "_commit", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_script.main(_args(synth, out, 8, "--fsdp", "--max-steps", "5", "--resume", str(out / "last.dcp")))
    assert (out / "sharded" / "step_00000005.tmp" / ".metadata").exists()  # the new one was fully written ...
    assert os.readlink(out / "last.dcp") == os.path.join("sharded", "step_00000004")  # ... but not committed
    assert vf_dist.read_train_state(out / "last.dcp")["step"] == 4
    monkeypatch.undo()
    if dist.is_initialized():
        dist.destroy_process_group()
    # The previous checkpoint still resumes, continuing exactly as the uninterrupted run; the torn folder goes.
    train_script.main(_args(synth, out, 8, "--fsdp", "--max-steps", "6", "--resume", str(out / "last.dcp")))
    assert {k: v for k, v in _losses(out).items() if k > 4} == {
        k: v for k, v in _losses(one_fsdp / "full").items() if k > 4}
    assert [p.name for p in (out / "sharded").iterdir()] == ["step_00000006"]


def test_evaluation_under_fsdp_matches_one_plain_process(synth, two, tmp_path):
    """The two-node run evaluated the sharded model after epoch 3 (every rank its share of the images, COCOeval
    once on rank 0) and saved those weights as best.pth: one plain process scores them the same."""
    evals = [json.loads(x) for x in (two["at10"] / "metrics.jsonl").read_text().splitlines() if "val/AP" in x]
    assert [e["epoch"] for e in evals] == [3]
    train_script.main(_args(synth, tmp_path, 8, "--eval-only", "--init", str(two["at10"] / "best.pth"),
                            "--use-gt-bbox"))
    sharded = json.loads((two["at10"] / "val_keypoints.json").read_text())
    plain = json.loads((tmp_path / "val_keypoints.json").read_text())
    key = lambda r: (r["image_id"], round(r["score"], 4))  # noqa: E731
    assert len(plain) > 0 and sorted(map(key, sharded)) == sorted(map(key, plain))


def test_bf16_checkpointing_and_freezing_under_fsdp(synth, tmp_path):
    """bf16 blocks (MixedPrecisionPolicy) with the fp32 classic head (BatchNorm), per-block activation
    checkpointing and --freeze attn: frozen weights stay at their initial values, the rest trains."""
    argv = _args(synth, tmp_path, 8, "--fsdp", "--amp", "bf16", "--checkpointing", "--freeze", "attn",
                 "--max-steps", "2")
    del argv[argv.index("--head"):argv.index("--head") + 2]  # the preset's classic head
    train_script.main(argv)
    assert all(0 < v < 1 for v in _losses(tmp_path).values())
    torch.manual_seed(3)  # train.py seeds with --seed + rank, then builds the model
    init = Model(train_script.resolve_preset(train_script.parse_args(argv)).model).state_dict()
    trained = _weights(vf_dist.consolidate(tmp_path / "last.dcp", tmp_path / "w.pth"))
    frozen = [k for k in init if ".attn." in k or ".norm1." in k]
    assert frozen and all(torch.equal(init[k], trained[k]) for k in frozen)
    changed = [k for k in init if not torch.equal(init[k], trained[k])]
    assert any(".mlp." in k for k in changed) and any("keypoint_head" in k for k in changed)
