"""checkpoints.yaml: its content, sha256 matching, name resolution, download and metadata precedence."""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml

import ncprobe
from ncprobe.checkpoint import catalog, load_checkpoint
from ncprobe.errors import CheckpointError
from ncprobe.models import create_model
from ncprobe.models import external as external_mod

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT_YAML = Path(__file__).resolve().parents[1] / "checkpoints.yaml"
AKAMASTER = {20: ("12fca82f", 91.73), 32: ("d509ac18", 92.63), 44: ("014dd654", 93.10),
             56: ("4bfd9763", 93.39), 110: ("1d1ed7c2", 93.68), 1202: ("f3b1deed", 93.82)}


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", 10).eval()
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, path)
    return model, path, hashlib.sha256(path.read_bytes()).hexdigest()


def _registry(tmp_path, monkeypatch, entries):
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"checkpoints": entries}))
    monkeypatch.setenv("NCPROBE_REGISTRY", str(path))
    return path


def _entry(**kw):
    e = {"name": "toy-cifar", "arch": "cifar_resnet20", "dataset": "cifar10", "num_classes": 10,
         "input_size": [3, 32, 32], "mean": [0.4, 0.4, 0.4], "std": [0.3, 0.3, 0.3], "top1": 12.5}
    e.update(kw)
    return e


def test_packaged_registry_is_the_root_file(monkeypatch):
    monkeypatch.delenv("NCPROBE_REGISTRY", raising=False)
    packaged = Path(ncprobe.__file__).parent / "checkpoints.yaml"
    assert packaged.resolve() == ROOT_YAML.resolve()
    assert catalog.registry_path() == catalog.PACKAGED


def test_akamaster_family_entries():
    entries = {e["name"]: e for e in yaml.safe_load(ROOT_YAML.read_text())["checkpoints"]}
    for depth, (prefix, top1) in AKAMASTER.items():
        e = entries[f"resnet{depth}-cifar10"]
        assert e["arch"] == f"cifar_resnet{depth}" and e["num_classes"] == 10 and e["dataset"] == "cifar10"
        fname = f"resnet{depth}-{prefix}.th"
        assert e["url"] == f"https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{fname}"
        assert e["filename"] == fname and e["sha256"].startswith(prefix) and e["top1"] == top1
        assert e["mean"] == [0.485, 0.456, 0.406] and e["std"] == [0.229, 0.224, 0.225]
        assert e["input_size"] == [3, 32, 32]
    # full hashes where PROVENANCE.md gives them
    assert entries["resnet20-cifar10"]["sha256"] == "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"
    assert entries["resnet32-cifar10"]["sha256"] == "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850"
    timm_entries = [e for e in entries.values() if e["arch"].startswith("timm:")]
    assert len(timm_entries) >= 3
    for e in timm_entries:
        assert e["url"] == "hf-hub:timm/" + e["arch"][len("timm:") :] and e["num_classes"] == 1000
        assert re.fullmatch(r"\d+\.\d+", str(e["top1"]))


@pytest.mark.parametrize("how", ["full", "prefix"])
def test_sha256_match_takes_registry_facts(tmp_path, monkeypatch, model_file, how):
    model, path, sha = model_file
    _registry(tmp_path, monkeypatch, [_entry(sha256=sha if how == "full" else sha[:8])])
    ckpt = load_checkpoint(path)
    assert ckpt.name == "toy-cifar" and ckpt.sha256 == sha
    for fact in ("arch", "num_classes", "input_size", "mean", "std", "name"):
        assert ckpt.origin[fact] == "registry", fact
    assert ckpt.mean == (0.4, 0.4, 0.4) and ckpt.std == (0.3, 0.3, 0.3)
    assert ckpt.metadata["published_top1"] == 12.5
    # flags beat the registry
    ckpt = load_checkpoint(path, std="0.5,0.5,0.5")
    assert ckpt.std == (0.5, 0.5, 0.5) and ckpt.origin["std"] == "flag" and ckpt.origin["mean"] == "registry"


def test_no_match_when_hash_differs(tmp_path, monkeypatch, model_file):
    _, path, sha = model_file
    other = ("0" if sha[0] != "0" else "1") + sha[1:8]
    _registry(tmp_path, monkeypatch, [_entry(sha256=other)])
    ckpt = load_checkpoint(path)
    assert ckpt.origin["arch"] == "inferred" and ckpt.name == "weights"


def test_registry_arch_that_does_not_fit(tmp_path, monkeypatch, model_file):
    _, path, sha = model_file
    _registry(tmp_path, monkeypatch, [_entry(sha256=sha, arch="cifar_resnet32")])
    with pytest.raises(CheckpointError, match=r"does not fit architecture cifar_resnet32 \(from the checkpoint registry\)"):
        load_checkpoint(path)


def test_name_resolves_to_cached_file_without_download(tmp_path, monkeypatch, model_file):
    model, path, sha = model_file
    _registry(tmp_path, monkeypatch, [_entry(sha256=sha[:8], url="https://example.invalid/w-abc.pt", filename="w-abc.pt")])
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(path, cache / "w-abc.pt")
    monkeypatch.setenv("NCPROBE_CHECKPOINTS", str(cache))

    def no_download(*a, **k):
        raise AssertionError("must not download a cached file")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    ckpt = load_checkpoint("toy-cifar")
    assert ckpt.name == "toy-cifar" and ckpt.metadata["path"] == str(cache / "w-abc.pt")
    assert ckpt.source == "toy-cifar"


def test_download_once_then_cached(tmp_path, monkeypatch, model_file):
    model, path, sha = model_file
    _registry(tmp_path, monkeypatch, [_entry(sha256=sha, url="https://example.invalid/x/w.pt")])
    monkeypatch.setenv("NCPROBE_CHECKPOINTS", str(tmp_path / "cache"))
    calls = []

    def fake_download(url, dst, progress=True, **kw):
        calls.append(url)
        shutil.copy(path, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    a = load_checkpoint("toy-cifar")
    b = load_checkpoint("toy-cifar")
    assert calls == ["https://example.invalid/x/w.pt"]
    assert (tmp_path / "cache" / "w.pt").is_file() and not (tmp_path / "cache" / "w.pt.part").exists()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(a.model(x), model(x), atol=1e-6) and torch.allclose(b.model(x), model(x), atol=1e-6)


def test_download_failure_and_bad_hash_are_one_line(tmp_path, monkeypatch, model_file):
    _, path, sha = model_file
    _registry(tmp_path, monkeypatch, [_entry(sha256="deadbeef", url="https://example.invalid/w.pt")])
    monkeypatch.setenv("NCPROBE_CHECKPOINTS", str(tmp_path / "cache"))

    def offline(url, dst, progress=True, **kw):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CheckpointError, match=r"could not download toy-cifar from https://example.invalid/w.pt .*Name or service not known"):
        load_checkpoint("toy-cifar")

    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, progress=True, **kw: shutil.copy(path, dst))
    with pytest.raises(CheckpointError, match=r"the registry says deadbeef"):
        load_checkpoint("toy-cifar")
    assert not list((tmp_path / "cache").iterdir())  # nothing half-downloaded left behind


def test_unknown_name_and_bad_registry(tmp_path, monkeypatch):
    _registry(tmp_path, monkeypatch, [_entry()])
    with pytest.raises(CheckpointError, match="not found: no such file, and not a name in the checkpoint registry"):
        load_checkpoint("no-such-model")
    monkeypatch.setenv("NCPROBE_REGISTRY", str(tmp_path / "missing.yaml"))
    with pytest.raises(CheckpointError, match="NCPROBE_REGISTRY"):
        load_checkpoint("no-such-model")
    bad = tmp_path / "bad.yaml"
    bad.write_text("checkpoints:\n  - {name: a}\n")
    monkeypatch.setenv("NCPROBE_REGISTRY", str(bad))
    with pytest.raises(CheckpointError, match="without name/arch"):
        load_checkpoint("a")


def test_timm_registry_name_uses_pretrained_weights(tmp_path, monkeypatch):
    """hf-hub entries go through timm.create_model(pretrained=True); faked here (no network)."""
    timm = pytest.importorskip("timm")
    _registry(tmp_path, monkeypatch, [_entry(name="tiny.hub", arch="timm:test_resnet", url="hf-hub:timm/test_resnet",
                                             num_classes=1000, top1=1.5)])
    seen = {}

    def fake_create(model_name, num_classes=None, pretrained=False):
        if pretrained or not seen:  # the spec is also built (on the meta device) without weights
            seen.update(name=model_name, pretrained=pretrained)
        return timm.create_model(model_name, pretrained=False, num_classes=num_classes or 1000)

    monkeypatch.setattr(external_mod, "timm_create", fake_create)
    ckpt = load_checkpoint("tiny.hub")
    assert seen == {"name": "test_resnet", "pretrained": True}
    assert ckpt.arch == "timm:test_resnet" and ckpt.name == "tiny.hub" and ckpt.sha256 == ""
    assert ckpt.num_classes == 1000 and ckpt.head_name == "fc"
    assert ckpt.input_size == (3, 160, 160) and ckpt.origin["input_size"] == "file"  # timm's pretrained_cfg
    assert ckpt.metadata["published_top1"] == 1.5

    def offline(model_name, num_classes=None, pretrained=False):
        raise OSError("offline")

    monkeypatch.setattr(external_mod, "timm_create", offline)
    monkeypatch.setattr(external_mod, "_hub_reachable", lambda: True)  # a network that fails mid-download
    with pytest.raises(CheckpointError, match=r"could not get the pretrained weights of timm:test_resnet .*offline"):
        load_checkpoint("timm:test_resnet")
    # no network at all: said at once, with no retries
    monkeypatch.setattr(external_mod, "_hub_reachable", lambda: False)
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="cannot be reached"):
        load_checkpoint("timm:test_resnet")
    assert time.perf_counter() - started < 5


def test_every_registry_entry_names_an_architecture_that_builds_with_its_classes():
    """Each entry's arch resolves without network and its head has the entry's class count."""
    from ncprobe.checkpoint import catalog as cat
    from ncprobe.models import get_arch
    from ncprobe.models.introspect import build_on_meta

    for entry in cat.entries():
        arch = entry["arch"]
        if arch.startswith("timm:"):
            continue
        spec = get_arch(arch)
        model = build_on_meta(spec.builder, num_classes=entry["num_classes"])
        assert model.get_submodule(spec.head).out_features == entry["num_classes"], entry["name"]
        if entry.get("filename") and len(entry.get("sha256", "")) == 8:
            assert entry["sha256"] in entry["filename"], entry["name"]  # the publisher's hash prefix
