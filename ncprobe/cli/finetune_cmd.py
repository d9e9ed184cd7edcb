"""`ncprobe finetune`: train or fine-tune with the L2, fixed-ETF and entropy neural-collapse controls."""

from __future__ import annotations

from pathlib import Path

import click

MODE_HELP = """\b
Modes (--mode):
  ce           plain cross-entropy: the baseline (a checkpoint keeps its head).
  l2           L2-normalize the pooled feature before the linear head,
               logits = W h/||h|| + b (Haas, Yolland, Rabus, TMLR 2023).
               Slower than ce in short SGD runs: use more epochs or adamw.
  etf          frozen, bias-free simplex-ETF projector d -> 2048 -> d with
               weights sqrt(c/(c-1)) (I - 11^T/c), c = d, then L2-normalize
               and a trainable linear head (Harun, Gallardo, Kanan, ICML 2025).
               Label smoothing 0.1 by default.
  entropy      ce + alpha * KoLeo entropy regularizer on the L2-normalized
               encoder embedding (Harun et al. 2025).
  etf+entropy  etf + KoLeo: the full Harun et al. recipe, strong collapse at
               the projector and less collapse at the encoder.
"""


@click.command(name="finetune", epilog=MODE_HELP)
@click.argument("checkpoint", metavar="[CKPT]", required=False)
@click.option("--arch", default=None, metavar="NAME",
              help="Train this architecture from scratch instead of fine-tuning CKPT: cifar_resnet20, resnet18_cifar, "
                   "wrn28_10, small_cnn, ..., or timm:NAME.")
@click.option("--data", required=True, metavar="SPEC",
              help="Labelled training set (default split: train), e.g. cifar10, digits@classes=0-5, set.npz.")
@click.option("--mode", required=True, type=click.Choice(["ce", "l2", "etf", "entropy", "etf+entropy"]),
              help="Neural-collapse control (see below).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.safetensors",
              help="Where to write the checkpoint (after every epoch); the resume state goes to FILE.safetensors.resume.pt.")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True, help="Training epochs.")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True,
              help="SGD with momentum 0.9, or AdamW.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate. Default: 0.1 (sgd) / 0.01 (adamw, Harun et al.'s ResNet value) from scratch, "
                   "10x less when fine-tuning CKPT.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None,
              help="Default: 5e-4 (sgd) / 0.05 (adamw).")
@click.option("--momentum", type=click.FloatRange(min=0, max=1), default=0.9, show_default=True, help="SGD momentum.")
@click.option("--batch-size", type=click.IntRange(min=2), default=128, show_default=True, help="Images per step.")
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=None,
              help="Linear warm-up before the cosine decay (fractions allowed). Default: 5% of --epochs.")
@click.option("--alpha", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Weight of the KoLeo entropy term (entropy modes).")
@click.option("--label-smoothing", type=click.FloatRange(min=0, max=1, max_open=True), default=None,
              help="Cross-entropy label smoothing. Default: 0.1 for etf modes, else 0.")
@click.option("--projector-dim", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Hidden width of the ETF projector (etf modes).")
@click.option("--l2-scale", type=click.FloatRange(min=0, min_open=True), default=None,
              help="l2 mode: multiply the normalized feature by this scale (default: none).")
@click.option("--learn-scale", is_flag=True, help="l2 mode: learn the scale (starts at --l2-scale or 1).")
@click.option("--no-flip", is_flag=True, help="No random horizontal flips (for digits, text, ...).")
@click.option("--no-augment", is_flag=True, help="No random crops or flips.")
@click.option("--val", default=None, metavar="SPEC", help="Labelled set for per-epoch validation accuracy (default split: test).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for initialization, shuffling and augmentation.")
@click.option("--resume", is_flag=True, help="Continue from FILE.safetensors.resume.pt (same settings required).")
@click.option("--trust-pickle", is_flag=True,
              help="Allow a CKPT that needs arbitrary unpickling. Only for files from a source you trust: unpickling can run code.")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where torchvision-named datasets live (default: $NCPROBE_DATA or ~/.cache/ncprobe/data).")
@click.option("--device", default=None, metavar="DEV", help="cpu, cuda, cuda:N (default: CUDA when present, else CPU).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Data-loading worker processes (only used for image folders).")
@click.option("--limit-batches", type=click.IntRange(min=1), default=None, help="At most this many batches per epoch (smoke tests).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or per-epoch lines.")
@click.option("--save-every", type=click.IntRange(min=1), default=None, metavar="K",
              help="Keep a copy of the checkpoint every K epochs: FILE.epochNNN.safetensors.")
@click.option("--track", is_flag=True,
              help="Collapse over training: after every --track-every epochs, NC1-NC4 of every probed layer on "
                   "--track-data (and AUROCs on --track-ood) to trajectory.csv, with a figure of NC1 against epoch.")
@click.option("--track-every", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="Measure every K epochs (and after the last).")
@click.option("--track-data", default=None, metavar="SPEC",
              help="Labelled set to measure on. Default: a seeded subset of the training set, --data@n=N,seed=0.")
@click.option("--track-n", type=click.IntRange(min=2), default=None, metavar="N",
              help="Size of the default tracking subset [default: 1000, or the whole set if smaller].")
@click.option("--track-ood", multiple=True, metavar="SPEC",
              help="OOD set for tracked AUROCs (repeatable); ID = --val, else the tracking set itself.")
@click.option("--track-scorers", default=None, metavar="NAMES",
              help="Scorers for the tracked AUROCs, fitted on the tracking set [default: energy,mahalanobis].")
@click.option("--track-layers", default=None, metavar="NAMES",
              help="Probe points to track, as collapse --layers (default: the checkpoint's).")
@click.option("--track-out", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Folder for trajectory.csv and FILE.trajectory.png (default: the folder of --out).")
@click.option("--group", default=None, help="Tag stored with the tracking rows (e.g. a recipe name).")
def command(checkpoint, arch, data, mode, out, epochs, optimizer, lr, weight_decay, momentum, batch_size,
            warmup_epochs, alpha, label_smoothing, projector_dim, l2_scale, learn_scale, no_flip, no_augment, val,
            seed, resume, trust_pickle, data_root, device, workers, limit_batches, quiet, save_every, track,
            track_every, track_data, track_n, track_ood, track_scorers, track_layers, track_out, group):
    """Train --arch from scratch, or fine-tune CKPT, with a neural-collapse control.

    Give exactly one of CKPT and --arch. Schedule: linear warm-up then cosine decay, per step;
    random crop (padding 4 at 32x32, scaled to the input side) and horizontal flip; bf16/fp16
    autocast on CUDA. The result is an ncprobe .safetensors checkpoint that every other command
    loads with no flags; its probe points include `encoder` (and `projector` in etf modes).

    \b
    Examples:
      ncprobe finetune --arch cifar_resnet20 --data cifar10 --mode etf+entropy --epochs 100 \\
          --optimizer adamw --val cifar10 --out r20-etf.safetensors
      ncprobe finetune resnet20.th --data cifar10 --mode l2 --epochs 10 --out r20-l2.safetensors
      ncprobe finetune --arch small_cnn --data digits@classes=0-5 --mode etf --epochs 5 \\
          --no-flip --out digits.safetensors
      ncprobe finetune --arch small_cnn --data digits@classes=0-5 --mode l2 --epochs 10 --no-flip \\
          --track --save-every 1 --out runs/l2.safetensors   # runs/trajectory.csv, runs/l2.trajectory.png
      ncprobe collapse 'runs/l2.epoch*.safetensors' --data digits:train@classes=0-5 --out runs/
    """
    from ..errors import NcprobeError
    from ..finetune.train import finetune

    if (checkpoint is None) == (arch is None):
        raise NcprobeError("give exactly one of CKPT (fine-tune a checkpoint) or --arch NAME (train from scratch)")
    _, history = finetune(
        checkpoint, arch=arch, data=data, mode=mode, epochs=epochs, lr=lr, optimizer=optimizer,
        batch_size=batch_size, weight_decay=weight_decay, warmup_epochs=warmup_epochs, seed=seed, val=val,
        out=out, resume=resume, device=device, alpha=alpha, label_smoothing=label_smoothing,
        projector_dim=projector_dim, num_workers=workers, progress=not quiet, limit_batches=limit_batches,
        data_root=data_root, trust_pickle=trust_pickle, momentum=momentum, flip=not no_flip,
        augment=not no_augment, l2_scale=l2_scale, learn_scale=learn_scale, save_every=save_every, track=track,
        track_every=track_every, track_data=track_data, track_n=track_n, track_ood=list(track_ood),
        track_scorers=track_scorers, track_layers=track_layers, track_out=track_out, group=group,
    )
    click.echo(f"checkpoint: {out}")
    if history:
        last = history[-1]
        line = f"epoch {last['epoch']}: train accuracy {last['train_acc']:.4f}"
        if last.get("val_acc") is not None:
            line += f", val accuracy {last['val_acc']:.4f}"
        click.echo(line)
    if track:
        where = track_out if track_out is not None else Path(out).parent
        click.echo(f"trajectory: {Path(where) / 'trajectory.csv'}")
