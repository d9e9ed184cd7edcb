"""The training loop behind ``ncprobe finetune``.

Trains from scratch (``arch``) or fine-tunes a checkpoint (``source_ckpt``) with one of the
neural-collapse controls of :mod:`ncprobe.models.nc_heads`, and writes an ncprobe checkpoint
(``out``, .safetensors) plus a resume state (``<out>.resume.pt``) after every epoch.

Recipe: SGD (momentum 0.9) or AdamW; linear warm-up then cosine decay to 0, stepped per batch;
random crop (padding 4 at 32x32, scaled with the image side) + horizontal flip as batched tensor
ops on the device; bf16 (or fp16 + GradScaler) autocast on CUDA only. On CPU a run is
deterministic for a given seed: the shuffling of epoch e uses seed (seed, e), the augmentation a
CPU generator seeded likewise, and ``torch.use_deterministic_algorithms`` is on while training.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_checkpoint
from ..data import load_dataset
from ..data.batches import batch_loader
from ..data.transforms import Preprocess
from ..device import resolve_device
from ..errors import CheckpointError, DatasetError, NcprobeError
from ..jobs.write import check_creatable
from ..models.nc_heads import CE_HEAD_MODES, ETF_MODES, MODES, check_mode, wrap_model
from ..models.ncprobe_format import _jsonable, build_model_from_meta, create_base, save_checkpoint
from ..progress import progress_bar
from .augment import crop_padding, random_crop_flip
from .losses import NCLoss, default_label_smoothing
from .track import Tracker, epoch_path

OPTIMIZERS = ("sgd", "adamw")
# (lr from scratch, weight decay). Fine-tuning a checkpoint divides the learning rate by 10.
OPTIMIZER_DEFAULTS = {"sgd": (0.1, 5e-4), "adamw": (0.01, 0.05)}
FINETUNE_LR_FACTOR = 0.1
RESUME_VERSION = 1
# settings that must match for --resume to continue a run
RESUME_KEYS = ("source", "arch", "data", "mode", "epochs", "lr", "optimizer", "momentum", "batch_size",
               "weight_decay", "warmup_epochs", "seed", "alpha", "label_smoothing", "projector_dim",
               "l2_scale", "learn_scale", "flip", "augment", "limit_batches")


def default_lr(optimizer: str, finetuning: bool) -> float:
    """SGD 0.1 / AdamW 0.01 from scratch; ten times less when fine-tuning a checkpoint."""
    lr = OPTIMIZER_DEFAULTS[optimizer][0]
    return lr * FINETUNE_LR_FACTOR if finetuning else lr


def resume_path(out) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".resume.pt")


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up from 1/warmup to 1 over ``warmup_steps``, then cosine from 1 to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    rest = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / rest)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def _epoch_seed(seed: int, epoch: int) -> int:
    """One 63-bit seed per (seed, epoch), from numpy's SeedSequence."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> 1)


def _num_classes(source) -> int:
    nc = source.num_classes or 0
    return max(int(nc), int(source.labels.max()) + 1)


def _load_data(spec: str, data_root, default_split: str, what: str):
    src = load_dataset(spec, data_root=data_root, default_split=default_split)
    if len(src) < 2:
        raise DatasetError(f"{what} set {spec!r} has {len(src)} images; it needs at least 2 (check the split and options)")
    if not src.labelled:
        raise DatasetError(f"{what} set {spec!r} has no labels; fine-tuning needs a labelled set (npz with y, ...)")
    return src


def _build(source_ckpt, arch, mode, num_classes, head_opts, trust_pickle, input_size):
    """(model, meta-without-config, info) for a fresh run."""
    if source_ckpt is not None:
        ck = load_checkpoint(str(source_ckpt), trust_pickle=trust_pickle, map_location="cpu")
        model_in = ck.model
        arch_name = ck.arch
        in_size = tuple(input_size or ck.input_size)
        mean, std = tuple(ck.mean), tuple(ck.std)
        model = wrap_model(model_in, ck.head_name, mode, num_classes, input_size=in_size, **head_opts)
        info = {"source_classes": ck.num_classes, "source_name": ck.name}
    else:
        base, head_name, _, defaults = create_base(arch, num_classes)
        arch_name = arch
        in_size = tuple(input_size or defaults["input_size"])
        mean, std = defaults["mean"], defaults["std"]
        model = wrap_model(base, head_name, mode, num_classes, input_size=in_size, **head_opts)
        info = {}
    meta = {
        "arch": arch_name, "mode": mode, "num_classes": int(num_classes), "input_size": list(in_size),
        "mean": list(mean), "std": list(std), "head": dict(model.head_opts),
    }
    # the checkpoint must be loadable by name alone: rebuild it from meta and compare the state_dicts
    try:
        rebuilt, _, _ = build_model_from_meta(meta)
    except NcprobeError as exc:
        raise CheckpointError(f"architecture {arch_name!r} cannot be rebuilt from its name, so the fine-tuned "
                              f"checkpoint could not be loaded ({exc}); use a registered arch or timm:NAME") from exc
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))[:3]
        raise CheckpointError(f"the registered {arch_name!r} does not match this checkpoint's modules ({diff}); "
                              "fine-tune from --arch instead")
    return model, meta, info


def _make_optimizer(model, name, lr, weight_decay, momentum):
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@torch.no_grad()
def evaluate_accuracy(model, source, preprocess, device, batch_size=256, amp_dtype=None, limit_batches=None) -> float:
    """Top-1 accuracy of ``model`` on a labelled source (eval mode)."""
    was = model.training
    model.eval()
    correct = total = 0
    size = tuple(preprocess.size)
    for i, (x, y) in enumerate(batch_loader(source, batch_size, size=size, shuffle=False)):
        if limit_batches is not None and i >= limit_batches:
            break
        x = preprocess(x.to(device, non_blocking=True))
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        correct += int((logits.argmax(1).cpu() == y).sum())
        total += len(y)
    model.train(was)
    return correct / max(1, total)


def _check_args(source_ckpt, arch, mode, optimizer, epochs, batch_size, out):
    check_mode(mode)
    if (source_ckpt is None) == (arch is None):
        raise NcprobeError("give exactly one of a checkpoint to fine-tune (CKPT) or --arch NAME to train from scratch")
    if optimizer not in OPTIMIZERS:
        raise NcprobeError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if epochs < 1:
        raise NcprobeError(f"--epochs must be at least 1, got {epochs}")
    if batch_size < 2:
        raise NcprobeError(f"--batch-size must be at least 2 (BatchNorm and the KoLeo term need pairs), got {batch_size}")
    if out is None:
        raise NcprobeError("give --out PATH.safetensors for the fine-tuned checkpoint")
    if Path(out).suffix != ".safetensors":
        raise NcprobeError(f"--out {out} must end in .safetensors (ncprobe checkpoints are safetensors files)")
    if Path(out).is_dir():
        raise NcprobeError(f"--out {out} is a directory; give a file name ending in .safetensors")
    if not Path(out).exists():
        check_creatable(out, f"--out {out}")  # before training, not after it


def finetune(source_ckpt: str | Path | None = None, *, arch: str | None = None, data: str, mode: str,
             epochs: int = 30, lr: float | None = None, optimizer: str = "sgd", batch_size: int = 128,
             weight_decay: float | None = None, warmup_epochs: float | None = None, seed: int = 0,
             val: str | None = None, out: str | Path | None = None, resume: bool = False, device=None,
             alpha: float = 0.05, label_smoothing: float | None = None, projector_dim: int = 2048,
             num_workers: int = 0, progress: bool = True, limit_batches: int | None = None,
             data_root=None, trust_pickle: bool = False, momentum: float = 0.9, flip: bool = True,
             augment: bool = True, l2_scale: float | None = None, learn_scale: bool = False,
             input_size=None, amp: bool = True, stop_after: int | None = None, log=None, track: bool = False,
             track_every: int = 1, track_data: str | None = None, track_n: int | None = None, track_ood=(),
             track_scorers=None, track_out=None, track_layers=None, group: str | None = None,
             save_every: int | None = None):
    """Train ``arch`` from scratch or fine-tune ``source_ckpt`` on ``data`` with NC control ``mode``.

    Modes: ``ce`` (baseline), ``l2`` (L2-normalized penultimate feature, Haas et al. 2023), ``etf``
    (frozen simplex-ETF projector + L2 normalization, Harun et al. 2025), ``entropy`` (ce + KoLeo)
    and ``etf+entropy`` (the full Harun et al. recipe). Defaults: lr 0.1 (SGD) / 0.01 (AdamW) from
    scratch, 10x less when fine-tuning; weight decay 5e-4 (SGD) / 0.05 (AdamW); warm-up 5% of the
    epochs; label smoothing 0.1 in the ETF modes, else 0.

    Saves ``out`` and ``<out>.resume.pt`` after every epoch; ``resume=True`` continues from the latter
    (same settings required). ``stop_after=k`` stops after k epochs of this call, as an interruption
    would (for tests). ``limit_batches`` caps the batches per epoch (smoke runs).
    Returns ``(model in eval mode, history)``, history = one dict per epoch with ``epoch``, ``loss``,
    ``train_acc`` (on the augmented batches), ``val_acc`` (None without ``val``), ``lr`` (of the epoch's
    last step) and ``seconds``.

    ``save_every=k`` keeps a copy of the checkpoint every k epochs, ``<out stem>.epochNNN.safetensors``.
    ``track=True`` measures collapse over training (:mod:`ncprobe.finetune.track`): after every
    ``track_every``-th epoch and the last, the NC metrics of every probed layer (``track_layers``, as
    ``collapse``'s ``layers``) on ``track_data`` (default: a seeded subset of ``track_n`` images of the
    training set, 1000 or all, as a spec that ``ncprobe collapse --data`` accepts) and, with
    ``track_ood`` sets, the AUROC of ``track_scorers`` (default energy, mahalanobis; fitted on the
    tracking set) of the ID set (``val``, else the tracking set itself) against each; appended to
    ``track_out/trajectory.csv`` (default: ``out``'s folder) under one run id, kept across ``resume``,
    with the figure ``<out stem>.trajectory.png`` of NC1 against epoch. ``group`` tags those rows.
    """
    _check_args(source_ckpt, arch, mode, optimizer, epochs, batch_size, out)
    _check_track_args(track, track_every, track_data, track_n, track_ood, track_out, save_every)
    if log is None:
        def log(msg):
            if progress:
                print(msg, file=sys.stderr, flush=True)
    out = Path(out)
    rpath = resume_path(out)
    dev = resolve_device(device)
    config = _configure(source_ckpt, arch=arch, data=data, val=val, mode=mode, epochs=epochs, lr=lr,
                        optimizer=optimizer, momentum=momentum, batch_size=batch_size, weight_decay=weight_decay,
                        warmup_epochs=warmup_epochs, seed=seed, alpha=alpha, label_smoothing=label_smoothing,
                        projector_dim=projector_dim, l2_scale=l2_scale, learn_scale=learn_scale, flip=flip,
                        augment=augment, limit_batches=limit_batches)
    train_src = _load_data(data, data_root, "train", "training")
    val_src = _load_data(val, data_root, "test", "validation") if val else None
    present = np.unique(train_src.labels[train_src.labels >= 0])
    if present.size < 2:
        raise DatasetError(f"training set {data!r} has {present.size} class; a classifier needs at least 2 "
                           "(check the classes= option)")
    if val_src is not None and int(val_src.labels.max()) >= _num_classes(train_src):
        raise DatasetError(f"validation set {val!r} has label {int(val_src.labels.max())} but the training set "
                           f"{data!r} has {_num_classes(train_src)} classes; validate on the same classes")
    state = _read_resume(rpath, config, resume, log)
    tracker = None
    if track:
        tracker = Tracker.start(out=out, data=data, train_src=train_src, val_src=val_src,
                                num_classes=_num_classes(train_src), every=track_every, epochs=epochs,
                                track_data=track_data, track_n=track_n, track_ood=track_ood,
                                track_scorers=track_scorers, track_out=track_out, layers=track_layers, group=group,
                                device=dev, data_root=data_root, state=state, progress=progress,
                                title=f"{out.stem} ({arch or source_ckpt}, {mode})", log=log)
    torch.manual_seed(seed)
    model, meta = _restore_or_build(state, rpath, source_ckpt, config, _num_classes(train_src), trust_pickle,
                                    input_size, log)
    run = _Run.start(model, meta, config, dev, amp, len(train_src), state, log, out)
    run.save_every = save_every
    run.extra_state = tracker.state() if tracker is not None else {}
    history = list(meta.get("history") or [])
    if tracker is not None and run.start_epoch and tracker.due(run.start_epoch):
        _track(tracker, out, run.start_epoch, save_every, log)  # rows an interruption lost
    det_before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if dev.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        for done_now, epoch in enumerate(range(run.start_epoch, epochs)):
            if stop_after is not None and done_now >= stop_after:
                break
            t0 = time.perf_counter()
            totals = _train_epoch(run, train_src, epoch, config, num_workers, progress)
            rec = _end_epoch(run, epoch, t0, totals, val_src, config, history, out, rpath, log)
            history.append(rec)
            if tracker is not None and tracker.due(epoch + 1):
                _track(tracker, out, epoch + 1, save_every, log)
    finally:
        torch.use_deterministic_algorithms(det_before[0], warn_only=det_before[1])
    model.eval()
    return model, history


def _check_track_args(track, track_every, track_data, track_n, track_ood, track_out, save_every) -> None:
    """The tracking and ``save_every`` settings make sense together (before anything is loaded)."""
    if save_every is not None and int(save_every) < 1:
        raise NcprobeError(f"--save-every must be at least 1, got {save_every}")
    if not track:
        given = [flag for flag, value in (("--track-data", track_data), ("--track-n", track_n),
                                          ("--track-ood", track_ood), ("--track-out", track_out)) if value]
        if given:
            raise NcprobeError(f"{given[0]} only applies with --track; add --track or drop it")
        return
    if int(track_every) < 1:
        raise NcprobeError(f"--track-every must be at least 1, got {track_every}")


def _track(tracker: Tracker, out: Path, epoch: int, save_every, log) -> None:
    """Measure epoch ``epoch``: its ``save_every`` copy when there is one (so the rows name that file),
    else ``out``."""
    kept = epoch_path(out, epoch)
    path = kept if save_every and epoch % int(save_every) == 0 and kept.exists() else out
    if tracker.measure(path, epoch, log) is None:
        log(f"note: {path.name} is no longer the checkpoint of epoch {epoch}; its tracking rows are missing")


def _configure(source_ckpt, *, arch, data, val, mode, epochs, lr, optimizer, momentum, batch_size, weight_decay,
               warmup_epochs, seed, alpha, label_smoothing, projector_dim, l2_scale, learn_scale, flip, augment,
               limit_batches) -> dict:
    """The run's settings with every default resolved (stored in the checkpoint; --resume compares them)."""
    finetuning = source_ckpt is not None
    lr = float(lr) if lr is not None else default_lr(optimizer, finetuning)
    weight_decay = float(weight_decay) if weight_decay is not None else OPTIMIZER_DEFAULTS[optimizer][1]
    warmup_epochs = float(warmup_epochs) if warmup_epochs is not None else 0.05 * epochs
    if label_smoothing is None:
        label_smoothing = default_label_smoothing(mode)
    if not 0.0 <= label_smoothing < 1.0:
        raise NcprobeError(f"--label-smoothing must be in [0, 1), got {label_smoothing}")
    if not 1 <= projector_dim <= 65_536:
        raise NcprobeError(f"--projector-dim must be in 1..65536, got {projector_dim}")
    if not 0 <= int(seed) < 2**63:
        raise NcprobeError(f"--seed must be in 0..2^63-1, got {seed}")
    return {
        "source": None if source_ckpt is None else str(source_ckpt), "arch": arch, "data": data, "val": val,
        "mode": mode, "epochs": int(epochs), "lr": lr, "optimizer": optimizer, "momentum": float(momentum),
        "batch_size": int(batch_size), "weight_decay": weight_decay, "warmup_epochs": warmup_epochs,
        "seed": int(seed), "alpha": float(alpha), "label_smoothing": float(label_smoothing),
        "projector_dim": int(projector_dim), "l2_scale": l2_scale, "learn_scale": bool(learn_scale),
        "flip": bool(flip), "augment": bool(augment), "limit_batches": limit_batches,
    }


def _read_resume(rpath: Path, config: dict, resume: bool, log) -> dict | None:
    """The resume state at ``rpath`` when resuming and present (its settings must equal ``config``)."""
    if not resume:
        return None
    if not rpath.exists():
        log(f"note: no resume state at {rpath}; starting from the beginning")
        return None
    try:
        state = torch.load(rpath, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("version") != RESUME_VERSION:
            raise NcprobeError(f"{rpath} is not an ncprobe resume state of this version; delete it or drop --resume")
        old = json.loads(state["meta"])["config"]
        if not isinstance(old, dict):
            raise TypeError("config is not a dict")
    except NcprobeError:
        raise
    except Exception as exc:  # truncated, bit-flipped or edited: never suggest weights_only=False
        why = type(exc).__name__  # torch's own text would suggest the unsafe weights_only=False
        raise NcprobeError(f"the resume state {rpath} is damaged ({why}); delete it to start over, or drop --resume") from None
    diff = [k for k in RESUME_KEYS if old.get(k) != config.get(k)]
    if diff:
        k = diff[0]
        raise NcprobeError(f"{rpath} was written with {k}={old.get(k)!r}, this run has {k}={config.get(k)!r}; "
                           f"rerun with the same settings or delete {rpath.name} to start over")
    return state


def _restore_or_build(state, rpath, source_ckpt, config, data_classes, trust_pickle, input_size, log):
    """(model, meta): the model of a resume state, or a new one (fine-tuned checkpoint or fresh arch)."""
    mode = config["mode"]
    head_opts = {}
    if mode in ETF_MODES:
        head_opts["projector_dim"] = config["projector_dim"]
    if mode == "l2":
        head_opts.update(l2_scale=config["l2_scale"], learn_scale=config["learn_scale"])
    if state is not None:
        meta = json.loads(state["meta"])
        model, _, _ = build_model_from_meta(meta)
        model.load_state_dict(state["model"], strict=True)
        if int(meta["num_classes"]) < data_classes:
            raise NcprobeError(f"{rpath} has {meta['num_classes']} classes but {config['data']!r} has {data_classes}")
    else:
        model, meta, info = _build(source_ckpt, config["arch"], mode, data_classes, head_opts, trust_pickle,
                                   input_size)
        if info.get("source_classes") not in (None, data_classes):
            log(f"note: {info['source_name']} has {info['source_classes']} classes, {config['data']!r} has "
                f"{data_classes}: the classifier is re-initialized")
        meta["history"] = []
    meta["config"] = config
    return model, meta


@dataclass
class _Run:
    """What every epoch of one run shares: the model on its device, preprocessing, optimizer state."""

    model: nn.Module
    meta: dict
    dev: torch.device
    preprocess: Preprocess
    fill: torch.Tensor
    pad: int
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    criterion: NCLoss
    steps: int
    drop_last: bool
    start_epoch: int = 0
    save_every: int | None = None
    extra_state: dict | None = None  # kept in the resume state (the tracking run id)

    @classmethod
    def start(cls, model, meta, config, dev, amp, n_train: int, state, log, out: Path) -> _Run:
        model.to(dev)
        in_size = tuple(meta["input_size"])
        preprocess = Preprocess(tuple(meta["mean"]), tuple(meta["std"]), (int(in_size[1]), int(in_size[2]))).to(dev)
        fill = (-torch.tensor(meta["mean"], dtype=torch.float32) / torch.tensor(meta["std"], dtype=torch.float32))
        amp_dtype = None
        if amp and dev.type == "cuda":
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
        opt = _make_optimizer(model, config["optimizer"], config["lr"], config["weight_decay"], config["momentum"])
        batch_size, epochs = config["batch_size"], config["epochs"]
        drop_last = n_train > batch_size
        steps = n_train // batch_size if drop_last else 1
        if config["limit_batches"] is not None:
            steps = max(1, min(steps, int(config["limit_batches"])))
        total_steps = steps * epochs
        warmup_steps = int(round(config["warmup_epochs"] * steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total_steps, warmup_steps))
        start_epoch = 0
        if state is not None:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["torch_rng"])
            if dev.type == "cuda" and state.get("cuda_rng"):
                torch.cuda.set_rng_state_all(list(state["cuda_rng"]))
            start_epoch = int(state["epoch"])
            log(f"resuming {out.name} after epoch {start_epoch}/{epochs}")
        criterion = NCLoss(config["mode"], alpha=config["alpha"], label_smoothing=config["label_smoothing"])
        return cls(model=model, meta=meta, dev=dev, preprocess=preprocess, fill=fill.to(dev),
                   pad=crop_padding(int(in_size[1])), amp_dtype=amp_dtype, scaler=scaler, opt=opt, sched=sched,
                   criterion=criterion, steps=steps, drop_last=drop_last, start_epoch=start_epoch)


def _train_epoch(run: _Run, train_src, epoch: int, config: dict, num_workers: int, progress: bool) -> dict:
    """One pass over the training set; returns the epoch's loss sum, correct count, samples and last lr."""
    model, dev, seed = run.model, run.dev, config["seed"]
    model.train()
    gen = torch.Generator().manual_seed(_epoch_seed(seed, epoch) ^ 0x5EED)
    loader = batch_loader(train_src, config["batch_size"], size=run.preprocess.size, shuffle=True,
                          seed=_epoch_seed(seed, epoch), workers=num_workers, pin_memory=dev.type == "cuda",
                          drop_last=run.drop_last)
    bar = progress_bar(run.steps, f"epoch {epoch + 1}/{config['epochs']}", progress)
    loss_sum = 0.0
    correct = seen = 0
    last_lr = run.opt.param_groups[0]["lr"]
    for i, (x, y) in enumerate(loader):
        if i >= run.steps:
            break
        x = run.preprocess(x.to(dev, non_blocking=True))
        y = y.to(dev, non_blocking=True)
        if config["augment"]:
            x = random_crop_flip(x, pad=run.pad, flip=config["flip"], generator=gen, fill=run.fill)
        with torch.autocast(dev.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
            logits, h = model.forward_with_embedding(x)
            loss = run.criterion(logits, h, y)
        if not torch.isfinite(loss):
            raise NcprobeError(f"the loss became {loss.item()} at epoch {epoch + 1}, batch {i + 1}; "
                               f"lower --lr (now {config['lr']:g})")
        run.opt.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.opt)
        run.scaler.update()
        last_lr = run.opt.param_groups[0]["lr"]
        run.sched.step()
        b = len(y)
        loss_sum += float(loss.detach()) * b
        correct += int((logits.detach().argmax(1) == y).sum())
        seen += b
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
    bar.close()
    return {"loss_sum": loss_sum, "correct": correct, "seen": seen, "last_lr": last_lr}


def _end_epoch(run: _Run, epoch: int, t0: float, totals: dict, val_src, config: dict, history: list, out: Path,
               rpath: Path, log) -> dict:
    """Validate, record the epoch, save the checkpoint and the resume state, log one line."""
    val_acc = None
    if val_src is not None:
        val_acc = evaluate_accuracy(run.model, val_src, run.preprocess, run.dev,
                                    batch_size=max(config["batch_size"], 256), amp_dtype=run.amp_dtype)
    seen = max(1, totals["seen"])
    rec = {"epoch": epoch + 1, "loss": totals["loss_sum"] / seen, "train_acc": totals["correct"] / seen,
           "val_acc": val_acc, "lr": totals["last_lr"], "seconds": time.perf_counter() - t0}
    run.meta["history"] = [*history, rec]
    save_checkpoint(out, run.model, run.meta)
    if run.save_every and (epoch + 1) % int(run.save_every) == 0:
        _keep_copy(out, epoch_path(out, epoch + 1))
    _save_resume(rpath, run.model, run.opt, run.sched, run.scaler, run.meta, epoch + 1, run.dev, run.extra_state)
    log(f"epoch {epoch + 1}/{config['epochs']}: loss {rec['loss']:.4f}, train acc {rec['train_acc']:.4f}"
        + ("" if val_acc is None else f", val acc {val_acc:.4f}")
        + f", lr {rec['lr']:.3g}, {rec['seconds']:.1f}s")
    return rec


def _keep_copy(src: Path, dst: Path) -> None:
    """A byte-for-byte copy of the checkpoint ``src`` at ``dst``, via a temporary name (never half a file)."""
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise NcprobeError(f"cannot keep the epoch checkpoint {dst} ({exc.strerror or exc}); free space or "
                           "choose another --out folder") from None


def _save_resume(path: Path, model, opt, sched, scaler, meta, epoch: int, dev, extra: dict | None = None) -> None:
    """Tensors and plain containers only, so ``torch.load(weights_only=True)`` reads it."""
    state = {
        "version": RESUME_VERSION,
        "meta": json.dumps(_jsonable(meta)),
        "epoch": int(epoch),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if dev.type == "cuda" else [],
        **(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


__all__ = ["finetune", "evaluate_accuracy", "default_lr", "lr_factor", "resume_path", "MODES", "OPTIMIZERS",
           "CE_HEAD_MODES"]
