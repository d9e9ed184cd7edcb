"""Whole-pipeline wall time: `ncprobe layers` vs pytorch-ood's detectors used the way its docs show.

Task: 4 layers (layer1-3 and the penultimate feature of a CIFAR ResNet-20) x 6 scorers
(Mahalanobis, relative Mahalanobis, kNN on features; MSP, MaxLogit, energy on logits), one ID and
two OOD sets. ncprobe runs the network once per dataset and reads every layer from that pass
(caching off here, so the timing is of a cold run). Baseline, named: pytorch-ood 0.4, where each
feature detector takes an encoder and `fit(train_loader)`s, and `predict(x)` runs the network for
every batch, so the network is run once per (layer, detector, dataset). The inputs are
preprocessed once up front for both, so the baseline is not charged for data loading.

    python benchmarks/pipeline_speed.py [--n 2000] [--data-dir ../shared/data]

Uses the public ResNet-20 and CIFAR files in ../shared/data when present, else a randomly
initialized ResNet-20 on synthetic images (the timing ratio is what matters).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from ncprobe.api import layers as run_layers
from ncprobe.checkpoint import load_checkpoint
from ncprobe.checkpoint.loaded import LoadedCheckpoint
from ncprobe.data import load_dataset
from ncprobe.data.transforms import Preprocess
from ncprobe.models import create_model

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["layer1", "layer2", "layer3", "penultimate"]
SCORERS = ["mahalanobis", "rmds", "knn", "msp", "maxlogit", "energy"]


def setup(data_dir: Path, n: int):
    ckpt_file = data_dir / "checkpoints" / "resnet20-12fca82f.th"
    if ckpt_file.exists() and (data_dir / "cifar10_train.npz").exists():
        ckpt = load_checkpoint(ckpt_file)
        specs = {
            "fit": f"{data_dir / 'cifar10_train.npz'}@n={n}",
            "id": f"{data_dir / 'cifar10_test.npz'}@n={n}",
            "ood": [f"{data_dir / 'cifar100mix_test.npz'}@n={n}", f"{data_dir / 'tin_val_resize.npz'}@n={n}"],
        }
        what = "public ResNet-20 on ../shared/data"
    else:
        torch.manual_seed(0)
        model = create_model("cifar_resnet20", num_classes=10).eval()
        ckpt = LoadedCheckpoint(model=model, arch="cifar_resnet20", num_classes=10, head_name="linear",
                                input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3, sha256="random",
                                source="random", name="random-resnet20", probe_layers=["layer1", "layer2", "layer3"])
        specs = {
            "fit": f"fit=noise:uniform@n={n},size=32,seed=1",
            "id": f"id=noise:uniform@n={n},size=32,seed=2",
            "ood": [f"a=noise:gaussian@n={n},size=32,seed=3", f"b=noise:gaussian@n={n},size=32,seed=4"],
        }
        what = "random ResNet-20 on synthetic images (../shared/data absent)"
    return ckpt, specs, what


def tensors(ckpt, spec):
    src = load_dataset(spec)
    pre = Preprocess(ckpt.mean, ckpt.std, tuple(ckpt.input_size[-2:]))
    x = pre(torch.from_numpy(np.ascontiguousarray(src.images)).permute(0, 3, 1, 2))
    labels = src.labels if (src.labels >= 0).all() else np.zeros(len(src), dtype=np.int64)
    return x, torch.from_numpy(labels)


def encoder_for(model, head, layer):
    """A callable x -> pooled features at `layer`, as a pytorch-ood user would write one."""

    def encode(x):
        got = {}
        if layer == "penultimate":
            h = head.register_forward_pre_hook(lambda m, a: got.__setitem__("z", a[0]))
        else:
            h = model.get_submodule(layer).register_forward_hook(lambda m, i, o: got.__setitem__("z", o))
        try:
            model(x)
        finally:
            h.remove()
        z = got["z"]
        return z.mean((2, 3)) if z.dim() == 4 else z

    return encode


def run_pytorch_ood(ckpt, data, batch_size):
    from pytorch_ood.detector import KNN, RMD, EnergyBased, Mahalanobis, MaxLogit, MaxSoftmax
    from torch.utils.data import DataLoader, TensorDataset

    model = ckpt.model.eval()
    fit_loader = DataLoader(TensorDataset(*data["fit"]), batch_size=batch_size)
    aurocs = {}
    forwards = 0
    with torch.no_grad():
        for layer in LAYERS:
            enc = encoder_for(model, ckpt.head, layer)
            for name, cls in (("mahalanobis", Mahalanobis), ("rmds", RMD), ("knn", KNN)):
                det = cls(enc)
                det.fit(fit_loader)
                forwards += len(data["fit"][0])
                aurocs[(layer, name)] = _auroc(det, data, batch_size)
                forwards += len(data["id"][0]) + sum(len(x) for x, _ in data["ood"])
        for name, cls in (("msp", MaxSoftmax), ("maxlogit", MaxLogit), ("energy", EnergyBased)):
            det = cls(model)
            aurocs[("logits", name)] = _auroc(det, data, batch_size)
            forwards += len(data["id"][0]) + sum(len(x) for x, _ in data["ood"])
    return aurocs, forwards


def _auroc(det, data, batch_size):
    def predict(x):
        return torch.cat([det.predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()

    s_id = predict(data["id"][0])
    out = []
    for x, _ in data["ood"]:
        s_ood = predict(x)  # pytorch-ood: higher = more OOD
        out.append(roc_auc_score(np.r_[np.zeros(len(s_id)), np.ones(len(s_ood))], np.r_[s_id, s_ood]))
    return float(np.mean(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="images per set")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    args = ap.parse_args()
    ckpt, specs, what = setup(args.data_dir, args.n)

    t0 = time.perf_counter()
    res = run_layers(ckpt, specs["id"], specs["ood"], specs["fit"], scorers=SCORERS, layers=LAYERS[:3],
                     use_cache=False, progress=False, plot=False, batch_size=args.batch_size)
    t_ours = time.perf_counter() - t0
    ours_forwards = args.n * (2 + len(specs["ood"]))

    data = {"fit": tensors(ckpt, specs["fit"]), "id": tensors(ckpt, specs["id"]),
            "ood": [tensors(ckpt, s) for s in specs["ood"]]}
    t0 = time.perf_counter()
    theirs, their_forwards = run_pytorch_ood(ckpt, data, args.batch_size)
    t_theirs = time.perf_counter() - t0

    ours = res.ood.groupby(["layer", "scorer"])["auroc"].mean()
    worst = max(abs(ours[key] - value) for key, value in theirs.items())
    print(f"{what}; {args.n} images per set, 1 ID + {len(specs['ood'])} OOD sets; "
          f"{len(LAYERS)} layers x {len(SCORERS)} scorers; torch threads {torch.get_num_threads()}")
    print(f"  ncprobe layers (NC metrics included)  {t_ours:8.1f} s   {ours_forwards:7d} images through the network")
    print(f"  pytorch-ood detectors (baseline)      {t_theirs:8.1f} s   {their_forwards:7d} images through the network")
    print(f"  speed-up {t_theirs / t_ours:.1f}x; largest AUROC difference over the {len(theirs)} (layer, scorer) "
          f"pairs: {worst:.2e}")


if __name__ == "__main__":
    main()
