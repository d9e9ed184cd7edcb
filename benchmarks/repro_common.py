"""What both miniature reproductions share: locating ../shared/data, training, probing, timing."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
OOD_FILES = {
    "cifar100": "cifar100mix_test.npz",
    "mnist": "mnist_test.npz",
    "textures": "textures.npz",
    "tin": "tin_val_resize.npz",
}


def base_parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("NCPROBE_SHARED_DATA", DEFAULT_DATA)),
        help="folder with cifar10_train.npz, cifar10_test.npz and the OOD .npz files",
    )
    ap.add_argument("--seeds", type=int, default=3, help="number of seeds per recipe")
    ap.add_argument(
        "--epochs",
        type=int,
        default=5,
        help="training epochs per run, the same budget for every recipe (default 5: about 30 min per script on 2 cores)",
    )
    ap.add_argument("--arch", default="cifar_resnet20")
    ap.add_argument(
        "--train-n", type=int, default=None, help="use only N training images (seeded subsample)"
    )
    ap.add_argument(
        "--eval-n", type=int, default=None, help="use only N images of each test/OOD set"
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="output folder (default: benchmarks/out/<script>)"
    )
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default=None)
    ap.add_argument("-q", "--quiet", action="store_true")
    return ap


def check_data(data_dir: Path, names) -> None:
    missing = [n for n in names if not (data_dir / n).exists()]
    if missing:
        sys.exit(
            f"error: {data_dir} lacks {', '.join(missing)}; pass --data-dir (see ../shared/data/PROVENANCE.md)"
        )


def spec(data_dir: Path, file: str, name: str, n: int | None) -> str:
    opts = f"@n={n}" if n else ""
    return f"{name}={data_dir / file}{opts}"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def __str__(self):
        return f"{time.perf_counter() - self.start:.0f}s"


def header(title: str, args) -> str:
    return (
        f"# {title}\n\n{dt.date.today().isoformat()}, {machine()}\n"
        f"arch {args.arch}, {args.epochs} epochs, {args.seeds} seeds, train n={args.train_n or 'all'}, "
        f"eval n={args.eval_n or 'all'}\n"
    )


def run_recipes(args, out: Path, recipes, scorers, *, finetune_options=None, transfer=None) -> None:
    """For every seed and recipe: train from scratch on cifar10_train.npz, then `ncprobe layers`
    against the OOD files; the tables in `out` are started afresh."""
    from ncprobe.api import layers
    from ncprobe.finetune.train import finetune

    out.mkdir(parents=True, exist_ok=True)
    for f in ("ood.csv", "collapse.csv", "transfer.csv", "correlation.csv"):
        (out / f).unlink(missing_ok=True)
    train = spec(args.data_dir, "cifar10_train.npz", "cifar10-train", args.train_n)
    test = spec(args.data_dir, "cifar10_test.npz", "cifar10", args.eval_n)
    oods = [spec(args.data_dir, f, name, args.eval_n) for name, f in OOD_FILES.items()]
    for seed in range(args.seeds):
        for mode in recipes:
            t = Timer()
            ckpt = out / f"{args.arch}-{mode.replace('+', '-')}-seed{seed}.safetensors"
            _, hist = finetune(None, arch=args.arch, data=train, mode=mode, epochs=args.epochs, seed=seed,
                               out=ckpt, batch_size=args.batch_size, device=args.device,
                               progress=not args.quiet, **(finetune_options or {}))
            res = layers(str(ckpt), test, oods, train, scorers=scorers, out=out, group=mode, seed=seed,
                         device=args.device, progress=not args.quiet, cache_dir=out / "cache", transfer=transfer)
            print(f"[seed {seed} {mode}] train acc {hist[-1]['train_acc']:.3f}, test acc {res.id_accuracy:.4f}, {t}",
                  flush=True)
