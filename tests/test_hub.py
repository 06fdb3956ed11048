"""Model.from_pretrained with Hugging Face Hub ids, resolved offline from a Hub cache laid out in a temp folder."""

import sys

import pytest
import torch

from vitpose_fast import Model
from vitpose_fast.model.checkpoint import CheckpointError
from vitpose_fast.model.hub import is_hub_id

huggingface_hub = pytest.importorskip("huggingface_hub")

REPO = "usyd-community/vitpose-tiny-test"
SHA = "0123456789abcdef0123456789abcdef01234567"
TINY = dict(depth=1, embed_dim=64, num_heads=2, res=(64, 48), deconv_channels=(16, 16))


def _model():
    model = Model.from_config("vitpose_s", **TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model.eval()


def _lay_out_cache(cache, repo_id, files_from):
    """The Hub cache layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<sha>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / SHA
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    for f in files_from.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    return snap


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no local folder named like the id
    return cache


def test_hub_id_loads_from_offline_cache(tmp_path, offline_cache):
    model = _model()
    folder = tmp_path / "saved"
    model.save_pretrained_hf(folder)
    snap = _lay_out_cache(offline_cache, REPO, folder)
    # huggingface_hub's own API agrees that the layout is a cached snapshot of the repository.
    found = huggingface_hub.snapshot_download(REPO, cache_dir=offline_cache, local_files_only=True)
    assert found == str(snap)
    repos = {r.repo_id for r in huggingface_hub.scan_cache_dir(offline_cache).repos}
    assert repos == {REPO}

    loaded = Model.from_pretrained(REPO)
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)


def test_hub_file_id_loads_one_file(tmp_path, offline_cache):
    model = _model()
    src = tmp_path / "files"
    src.mkdir()
    model.export_official(src / "vitpose-tiny.pth")
    _lay_out_cache(offline_cache, REPO, src)
    loaded = Model.from_pretrained(f"{REPO}/vitpose-tiny.pth")
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)


def test_uncached_id_offline_says_what_to_run(offline_cache):
    with pytest.raises(CheckpointError) as err:
        Model.from_pretrained("usyd-community/vitpose-base-simple")
    msg = str(err.value)
    assert "huggingface-cli download usyd-community/vitpose-base-simple" in msg
    assert "HF_HUB_OFFLINE" in msg and "local folder" in msg


def test_without_huggingface_hub_the_error_says_what_to_install(offline_cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(CheckpointError, match="pip install huggingface_hub") as err:
        Model.from_pretrained("usyd-community/vitpose-base-simple")
    assert "local folder" in str(err.value)


def test_what_counts_as_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hub_id("usyd-community/vitpose-plus-base")
    assert is_hub_id("nielsr/vitpose-original-checkpoints/vitpose+_base.pth")
    assert not is_hub_id("runs/last.pth")  # a missing local file, not a repository
    assert not is_hub_id("./org/name") and not is_hub_id("/abs/org/name") and not is_hub_id("model.pth")
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    assert not is_hub_id("org/name")  # an existing local folder wins
    with pytest.raises(CheckpointError, match="does not exist"):
        Model.from_pretrained("runs/last.pth")
