"""Option groups shared by several sub-commands, so each flag means the same everywhere."""

from __future__ import annotations

import functools
from pathlib import Path

import click


def checkpoint_options(fn):
    """--arch, --num-classes, --trust-pickle, --trust-code, --mean, --std, --input-size."""

    @click.option("--arch", default=None, metavar="NAME",
                  help="Architecture, when it cannot be inferred: a registered name (cifar_resnet20, resnet18_cifar, "
                       "wrn28_10, ...), timm:NAME, path/to/file.py:Class or package.module:Class.")
    @click.option("--num-classes", type=click.IntRange(min=1), default=None, help="Number of classes (else read from the head).")
    @click.option("--trust-pickle", is_flag=True,
                  help="Allow checkpoints that need arbitrary unpickling. Only for files from a source you trust: unpickling can run code.")
    @click.option("--trust-code", is_flag=True,
                  help="Allow code stored in the checkpoint to run (TorchScript of an unknown architecture, a user "
                       "architecture named by the file). Only for files from a source you trust.")
    @click.option("--mean", default=None, metavar="R,G,B", help="Input normalization mean (overrides the checkpoint's).")
    @click.option("--std", default=None, metavar="R,G,B", help="Input normalization std (overrides the checkpoint's).")
    @click.option("--input-size", default=None, metavar="C,H,W",
                  help="Model input size, C,H,W or one side such as 32 (overrides the checkpoint's).")
    @functools.wraps(fn)
    def wrapper(*args, arch, num_classes, trust_pickle, trust_code, mean, std, input_size, **kwargs):
        opts = {"arch": arch, "num_classes": num_classes, "trust_pickle": trust_pickle, "trust_code": trust_code,
                "mean": mean, "std": std,
                "input_size": input_size}
        return fn(*args, checkpoint_options=opts, **kwargs)

    return wrapper


def run_options(fn):
    """--data-root, --download, --device, --batch-size, --workers, --cache, --no-cache, --cache-dtype,
    --memory-budget, --quiet."""

    @click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Where torchvision-named datasets live (default: $NCPROBE_DATA or ~/.cache/ncprobe/data).")
    @click.option("--download", is_flag=True, help="Download torchvision-named datasets that are missing (needs a network).")
    @click.option("--device", default=None, metavar="DEV", help="cpu, cuda, cuda:N (default: CUDA when present, else CPU).")
    @click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True, help="Images per forward pass.")
    @click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
                  help="Worker processes decoding image files (folders, image lists) while the model runs; 0 = "
                       "decode in the main process. In-memory sets (.npz, CIFAR, ...) need none.")
    @click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Feature cache directory (default: $NCPROBE_CACHE or ~/.cache/ncprobe/features).")
    @click.option("--no-cache", is_flag=True, help="Neither read nor write cached features.")
    @click.option("--cache-dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
                  help="How features are stored (cache and memory); float16 halves both, scorers still compute in float64.")
    @click.option("--memory-budget", default=None, metavar="SIZE",
                  help="Memory the run may use, e.g. 8G or 512M (default: $NCPROBE_MEMORY_BUDGET or half the free "
                       "memory). Larger feature sets spill to disk; scorers that would not fit refuse in one line.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
    @functools.wraps(fn)
    def wrapper(*args, data_root, download, device, batch_size, workers, cache_dir, no_cache, cache_dtype,
                memory_budget, quiet, **kwargs):
        opts = {"data_root": data_root, "download": download, "device": device, "batch_size": batch_size,
                "workers": workers, "cache_dir": cache_dir, "use_cache": not no_cache, "progress": not quiet,
                "cache_dtype": cache_dtype}
        if memory_budget is None:
            return fn(*args, run=opts, **kwargs)
        from ..budget import parse_bytes, using_memory_budget
        from ..errors import NcprobeError, ParameterError

        try:
            parse_bytes(memory_budget)
        except NcprobeError as exc:
            raise ParameterError(f"{{memory_budget}}: {exc}") from None
        with using_memory_budget(memory_budget):  # for this command only (a malformed size: one line)
            return fn(*args, run=opts, **kwargs)

    return wrapper


def ensure_writable_dir(path: Path) -> Path:
    """``--out`` checked before any work (see :func:`ncprobe.jobs.write.check_out`); creates nothing."""
    from ..jobs.write import check_out

    return check_out(path, ())


def cache_note(from_cache: dict) -> str:
    hits = [name for name, hit in from_cache.items() if hit]
    if not hits:
        return ""
    if len(hits) == len(from_cache):
        return "features: all served from the cache (no forward pass)"
    return f"features: {', '.join(hits)} served from the cache"


class LazyHelpOption(click.Option):
    """An option whose help text is computed only when help is shown (e.g. from a registry), so
    building the command imports nothing heavy."""

    def __init__(self, *args, help_from, **kwargs):
        super().__init__(*args, **kwargs)
        self._help_from = help_from

    def get_help_record(self, ctx):
        self.help = self._help_from()
        return super().get_help_record(ctx)


def _scorers_help() -> str:
    from ..scores import scorers_help

    return scorers_help()


def scorers_option(fn):
    """--scorers, with the names, defaults and help taken from the scorer registry."""
    return click.option("--scorers", cls=LazyHelpOption, help_from=_scorers_help, default=None, metavar="NAMES")(fn)


def note(line: str) -> None:
    """A one-line note of a run (e.g. the calibrated normalization), on stderr beside the warnings."""
    click.echo(line, err=True)
