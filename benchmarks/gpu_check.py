"""Every CUDA path of ncprobe in one short run, for a machine with a GPU.

    python benchmarks/gpu_check.py            # on the GPU machine (about 2-3 minutes)
    python benchmarks/gpu_check.py --dry-run  # the same checks with the CPU standing in (gloo, numpy)

Checks, each against the CPU computation of the same thing:
1. extraction on CUDA with bf16 autocast (a CIFAR ResNet-18, random weights) vs float32 on the CPU;
2. kNN through faiss on the GPU (one GPU: a clone; several: the sharded index) vs exact numpy search;
3. the Gaussian scorers' float64 linear algebra in torch on CUDA vs numpy (Mahalanobis, RMDS, GDA);
4. torchrun with NCCL (one rank per GPU, up to 2) vs one process: ood.csv and collapse.csv to 1e-9;
5. one epoch of fine-tuning on CUDA with autocast.
Prints one line per check and ``gpu_check: N passed, M failed``; with $OUT set, writes gpu_check.json there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _device(dry: bool) -> str:
    return "cpu" if dry else "cuda"


def check_extraction(dry: bool, work: Path) -> str:
    from ncprobe.checkpoint import load_checkpoint
    from ncprobe.data import load_dataset
    from ncprobe.features import extract_features
    from ncprobe.models import create_model

    torch.manual_seed(0)
    torch.save(create_model("resnet18_cifar", num_classes=10).state_dict(), work / "r18.pt")
    ckpt = load_checkpoint(str(work / "r18.pt"), arch="resnet18_cifar", mean="0.5,0.5,0.5", std="0.25,0.25,0.25",
                           input_size="32")
    src = load_dataset("noise:uniform@n=512,size=32")
    ref = extract_features(ckpt, src, use_cache=False, progress=False, device="cpu", amp=False)
    got = extract_features(ckpt, src, use_cache=False, progress=False, device=_device(dry), amp=not dry)
    worst = max(float(np.abs(got[k] - ref[k]).max() / (np.abs(ref[k]).max() + 1e-12)) for k in ref.layers)
    assert got.layers == ref.layers and worst < 5e-2, f"relative difference {worst:.3g}"
    return f"{len(ref.layers)} layers, max relative difference {worst:.2e} ({'float32, dry run' if dry else 'bf16'})"


def check_faiss(dry: bool) -> str:
    from ncprobe.scores import get_scorer
    from ncprobe.scores.neighbours import exact_top_k, faiss_gpu_available

    if not dry and not faiss_gpu_available():
        raise AssertionError("faiss has no GPU support here: pip install faiss-gpu-cu12 (the [gpu] extra)")
    rng = np.random.default_rng(0)
    fit, q = rng.standard_normal((20000, 256)).astype(np.float32), rng.standard_normal((2000, 256)).astype(np.float32)
    gpu = get_scorer("knn", k=10, backend="faiss", device=_device(dry)).fit(fit)
    ref = get_scorer("knn", k=10, backend="numpy", device="cpu").fit(fit)
    diff = float(np.abs(gpu.score(q) - ref.score(q)).max())
    assert diff < 1e-5, f"score difference {diff:.3g}"
    assert exact_top_k is not None
    return f"backend {gpu.backend_}, max score difference {diff:.2e}"


def check_gaussian(dry: bool) -> str:
    from ncprobe.scores import get_scorer

    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(10), 300)
    x = (rng.standard_normal((3000, 64)) + y[:, None] * 0.3).astype(np.float32)
    z = rng.standard_normal((1000, 64)).astype(np.float32)
    out = []
    for name in ("mahalanobis", "rmds", "gda"):
        a = get_scorer(name, backend="torch", device=_device(dry)).fit(x, y).score(z)
        b = get_scorer(name, backend="numpy").fit(x, y).score(z)
        rel = float(np.abs(a - b).max() / np.abs(b).max())
        assert rel < 1e-9, f"{name}: relative difference {rel:.3g}"
        out.append(f"{name} {rel:.1e}")
    return ", ".join(out)


def check_distributed(dry: bool, work: Path) -> str:
    sys.path.insert(0, str(REPO / "tests"))
    ngpu = torch.cuda.device_count()
    ranks = 2 if dry else max(1, min(2, ngpu))
    np.random.seed(0)
    for name, n, shift in (("fit", 600, 0), ("id", 300, 1), ("ood", 300, 60)):
        rng = np.random.default_rng(shift)
        yy = np.arange(n) % 3
        xx = rng.integers(0, 90, size=(n, 16, 16, 3)) + (50 * yy + shift)[:, None, None, None]
        np.savez(work / f"{name}.npz", x=np.clip(xx, 0, 255).astype(np.uint8), y=yy)
    torch.manual_seed(0)
    from ncprobe.models import create_model

    torch.save(create_model("small_cnn", num_classes=3).state_dict(), work / "w.pt")
    args = ["layers", "w.pt", "--arch", "small_cnn", "--num-classes", "3", "--mean", "0.5,0.5,0.5", "--std",
            "0.25,0.25,0.25", "--input-size", "16", "--id", "id.npz", "--fit", "fit.npz", "--ood", "ood.npz",
            "--scorers", "gda,mahalanobis,knn,energy", "--batch-size", "32", "--no-cache", "--no-plot", "-q",
            "--device", "cpu" if dry else "cuda"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "ncprobe", *args, "--out", "one"], cwd=work, env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-400:]
    many = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
                           "-m", "ncprobe", *args, "--out", "many"], cwd=work, env=env, capture_output=True, text=True)
    assert many.returncode == 0, many.stderr[-400:]
    import pandas as pd

    worst = 0.0
    for table in ("ood.csv", "collapse.csv"):
        a = pd.read_csv(work / "one" / table).select_dtypes("number")
        b = pd.read_csv(work / "many" / table).select_dtypes("number")
        worst = max(worst, float(np.nanmax(np.abs(a.to_numpy(float) - b.to_numpy(float)))))
    assert worst <= 1e-9 or not dry and worst < 1e-4, f"difference {worst:.3g}"
    backend = "gloo" if dry else "nccl"
    return f"{ranks} rank(s) over {backend}, max difference vs one process {worst:.1e}"


def check_finetune(dry: bool, work: Path) -> str:
    from ncprobe.finetune.train import finetune

    _, history = finetune(None, arch="small_cnn", data="digits:train@classes=0-5", mode="etf+entropy", epochs=1,
                          batch_size=64, out=work / "ft.safetensors", device=_device(dry), progress=False,
                          projector_dim=256, flip=False, optimizer="adamw", lr=3e-3)
    assert history and np.isfinite(history[-1]["loss"])
    return f"1 epoch etf+entropy, loss {history[-1]['loss']:.3f}, train accuracy {history[-1]['train_acc']:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="run every check with the CPU standing in for CUDA")
    dry = parser.parse_args().dry_run
    if not dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU machine, or --dry-run to test the script")
        return 2
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checks = [("extraction+autocast", lambda: check_extraction(dry, work)), ("faiss-gpu", lambda: check_faiss(dry)),
                  ("torch-linalg", lambda: check_gaussian(dry)), ("nccl", lambda: check_distributed(dry, work)),
                  ("finetune-amp", lambda: check_finetune(dry, work))]
        for name, fn in checks:
            t0 = time.perf_counter()
            try:
                detail, ok = fn(), True
            except Exception as exc:  # noqa: BLE001 - report every check, whatever breaks
                detail, ok = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}", False
            results[name] = {"ok": ok, "detail": detail, "seconds": round(time.perf_counter() - t0, 1)}
            print(f"{name:<20} {'ok  ' if ok else 'FAIL'} {results[name]['seconds']:>6.1f}s  {detail}", flush=True)
    device = "cpu (dry run)" if dry else torch.cuda.get_device_name(0)
    passed = sum(r["ok"] for r in results.values())
    print(f"gpu_check: {passed} passed, {len(results) - passed} failed on {device}, torch {torch.__version__}")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(json.dumps({"device": device, "results": results}, indent=1))
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
