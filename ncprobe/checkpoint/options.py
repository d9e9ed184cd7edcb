"""Click options shared by every command that loads a checkpoint.

Usage in a command module::

    from ..checkpoint.options import checkpoint_options, load_from_options

    @click.command()
    @click.argument("checkpoint")
    @checkpoint_options
    def command(checkpoint, **kw):
        ckpt = load_from_options(checkpoint, kw)   # pops the checkpoint options from kw
"""

from __future__ import annotations

import click

from .loader import load_checkpoint

OPTION_NAMES = ("arch", "num_classes", "trust_pickle", "mean", "std", "input_size")

_OPTIONS = [
    click.option(
        "--arch",
        default=None,
        metavar="NAME",
        help="Architecture: a registered name (cifar_resnet20, resnet18_cifar, wrn28_10, ...), timm:NAME, "
        "path/to/model.py:Class or pkg.module:Class. Default: from the file, the registry, or inferred.",
    ),
    click.option("--num-classes", type=click.IntRange(min=1), default=None, help="Number of classes (default: from the head)."),
    click.option(
        "--trust-pickle",
        is_flag=True,
        help="Allow unpickling code (full pickled models). Only for files from a source you trust.",
    ),
    click.option("--mean", default=None, metavar="M1,M2,M3", help="Input normalization mean (default: registry/arch)."),
    click.option("--std", default=None, metavar="S1,S2,S3", help="Input normalization std (default: registry/arch)."),
    click.option("--input-size", default=None, metavar="C,H,W", help="Input size, C,H,W or a side such as 32."),
]


def checkpoint_options(fn):
    """Add --arch, --num-classes, --trust-pickle, --mean, --std and --input-size to a click command."""
    for option in reversed(_OPTIONS):
        fn = option(fn)
    return fn


def load_from_options(source, options: dict, **kwargs):
    """``load_checkpoint(source, ...)`` with the checkpoint options popped from ``options``."""
    picked = {name: options.pop(name, None) for name in OPTION_NAMES}
    return load_checkpoint(
        source,
        picked["arch"],
        num_classes=picked["num_classes"],
        trust_pickle=bool(picked["trust_pickle"]),
        mean=picked["mean"],
        std=picked["std"],
        input_size=picked["input_size"],
        **kwargs,
    )
