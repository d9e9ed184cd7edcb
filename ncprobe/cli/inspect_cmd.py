"""``ncprobe inspect CKPT``: what ncprobe knows about a checkpoint, and where each fact came from."""

from __future__ import annotations

import json

import click

from ..checkpoint import load_checkpoint
from ..checkpoint.describe import describe
from .options import checkpoint_options

_ORIGIN_HELP = (
    "origin: flag = given on the command line, file = stored in the checkpoint, registry = checkpoints.yaml "
    "(matched by sha256 or name), model-config = the architecture's pretrained configuration (timm pretrained_cfg, "
    "torchvision weights.transforms()), inferred = from the weights' keys and shapes, calibrated = chosen on a "
    "labelled set, default = the architecture's default (for resize/crop: ncprobe's). resize, crop and "
    "interpolation apply to image files (folders, image lists); in-memory arrays are resized on the device"
)


def _nums(values) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _dims(shape) -> str:
    if shape is None:
        return "?"
    return " x ".join(str(d) for d in shape) if shape else "scalar"


def _file_line(info: dict) -> str:
    parts = [info["format"] or "?"]
    if info["wrapper"]:
        parts.append("weights under " + " / ".join(repr(k) for k in info["wrapper"]))
    if info["stripped_prefixes"]:
        parts.append("key prefix " + " + ".join(repr(p) for p in info["stripped_prefixes"]) + " stripped")
    return ", ".join(parts)


def _preprocessing_rows(prep: dict | None, origin: str) -> list[tuple[str, str, str]]:
    """The resize, crop and interpolation rows (image files), and the configuration they came from."""
    if not prep:
        return []
    text = prep["text"]
    rows = [("resize", text["resize"], origin), ("crop", text["crop"], origin),
            ("interpolation", prep["interpolation"], origin)]
    if prep.get("config"):
        rows.append(("preprocessing of", prep["config"], origin))
    return rows


def format_report(info: dict) -> str:
    origin = info["origin"]
    rows: list[tuple[str, str, str]] = [
        ("checkpoint", info["source"], ""),
        ("name", info["name"], origin.get("name", "")),
        ("architecture", info["arch"], origin.get("arch", "")),
        ("parameters", f"{info['parameters']:,}", ""),
        ("classes", str(info["num_classes"]), origin.get("num_classes", "")),
        ("input size", _dims(info["input_size"]), origin.get("input_size", "")),
        ("mean", _nums(info["mean"]), origin.get("mean", "")),
        ("std", _nums(info["std"]), origin.get("std", "")),
        *_preprocessing_rows(info.get("preprocessing"), origin.get("preprocessing", "")),
        ("head", f"{info['head']} ({info['head_module']})", origin.get("head", "")),
        ("sha256", info["sha256"] or "-", origin.get("sha256", "")),
        ("format", _file_line(info), ""),
    ]
    if info.get("training"):
        t = info["training"]
        accs = ", ".join(f"{k.replace('_', ' ')} {t[k]:.4f}" for k in ("train_acc", "val_acc") if t.get(k) is not None)
        rows.append(("trained with", f"ncprobe finetune --mode {t['mode']}, {t['epochs']} epochs on {t['data']}"
                     + (f" ({accs})" if accs else ""), ""))
    if info.get("published_top1") is not None:
        on = f" on {info['dataset']}" if info.get("dataset") else ""
        rows.append(("published top-1", f"{info['published_top1']} %{on}", "registry"))
    if info["file_extras"]:
        extras = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in info["file_extras"].items())
        rows.append(("saved alongside", extras[:100], "file"))
    if info.get("note"):
        rows.append(("note", info["note"], ""))

    label_w = max(len(r[0]) for r in rows) + 2
    value_w = min(max(len(r[1]) for r in rows if r[2]), 72) + 2
    lines = [f"{'':<{label_w}}{'':<{value_w}}origin"]
    for label, value, org in rows:
        lines.append(f"{label:<{label_w}}{value:<{value_w}}{org}".rstrip())

    shapes = info.get("shapes") or {}
    names = info["probe_layers"]
    titles = {"penultimate": f"penultimate (input of {info['head']})", "logits": "logits"}
    shown = [(titles.get(n, n), _dims(shapes.get(n))) for n in names]
    name_w = max(len("layer"), *(len(s[0]) for s in shown)) + 2
    lines.append("")
    lines.append(f"{'probe layers (stem -> head)':<{label_w + value_w}}{origin.get('probe_layers', '')}")
    lines.append(f"  {'layer':<{name_w}}output per sample")
    for title, dims in shown:
        lines.append(f"  {title:<{name_w}}{dims}")
    lines.append("")
    lines.append(_ORIGIN_HELP)
    return "\n".join(lines)


@click.command("inspect")
@click.argument("checkpoint")
@checkpoint_options
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON instead of a table.")
@click.option("--data", default=None, metavar="SPEC",
              help="A labelled set to calibrate the normalization (and input size) on when nothing else says it.")
def command(checkpoint: str, as_json: bool, data, checkpoint_options):
    """Show a checkpoint's architecture, parameter count, classes, input size and normalization,
    sha256 and probe layers, with the origin of each fact.

    CHECKPOINT is a file (state_dict, wrapped state_dict, .safetensors, TorchScript, or a pickled
    model with --trust-pickle), a name from checkpoints.yaml, or timm:NAME.
    """
    from ..jobs.calibrate import assumption_warning, calibrate
    from ..jobs.inputs import check_labelled, resolve_source

    ckpt = load_checkpoint(checkpoint, **checkpoint_options)
    line = None
    if data is not None:
        source = resolve_source(data)
        check_labelled(source, ckpt.num_classes, "calibration")
        line = calibrate(ckpt, source)
    elif assumption_warning(ckpt):
        line = f"warning: {assumption_warning(ckpt)}"
    info = describe(ckpt)  # may fail (e.g. a wrong input size): then the error is the only line
    if line:
        click.echo(line, err=True)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(format_report(info))
