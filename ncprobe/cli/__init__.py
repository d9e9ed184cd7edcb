"""The ``ncprobe`` command line: one click group, one module per sub-command.

User mistakes surface as ``error: <one line>`` on stderr with exit code 2 and no traceback; this
includes click's own usage errors (unknown flag, missing argument), which click would otherwise
print over several lines.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings

import click

from ..errors import NcprobeError, ParameterError

# sub-command name -> (module under ncprobe.cli holding a click command called `command`, short help)
COMMANDS = {
    "inspect": ("inspect_cmd", "Show a checkpoint's architecture, classes, normalization and probe points."),
    "eval": ("eval_cmd", "Top-1 accuracy of a checkpoint on a labelled dataset."),
    "collapse": ("collapse_cmd", "Neural-collapse statistics (NC1-NC4) for every probed layer."),
    "layers": ("layers_cmd", "Per-layer NC statistics and OOD scores: the main job."),
    "bench": ("bench_cmd", "A standard benchmark (OpenOOD v1.5, DDU) on one or more checkpoints: near/far table."),
    "leaderboard": ("leaderboard_cmd", "Rank checkpoints x scorers from an ood.csv; compare training curves."),
    "finetune": ("finetune_cmd", "Train or fine-tune with the L2, fixed-ETF and entropy NC controls."),
    "demo": ("demo_cmd", "The whole pipeline on scikit-learn's digits, no download."),
}


class LazyGroup(click.Group):
    """Imports a sub-command's module only when it runs, so `ncprobe --help` stays fast."""

    def list_commands(self, ctx):
        return [n for n, (mod, _) in COMMANDS.items() if importlib.util.find_spec(f"{__name__}.{mod}")]

    def get_command(self, ctx, name):
        if name not in COMMANDS or name not in self.list_commands(ctx):
            return None
        return importlib.import_module(f"{__name__}.{COMMANDS[name][0]}").command

    def format_commands(self, ctx, formatter):
        rows = [(n, COMMANDS[n][1]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ncprobe")
def cli():
    """ncprobe: per-layer neural collapse and OOD detection for any checkpoint.

    \b
    Typical use:
      ncprobe inspect resnet20.th
      ncprobe layers resnet20.th --id cifar10 --ood svhn --ood cifar100 --out runs/
      ncprobe leaderboard runs/ood.csv
      ncprobe finetune --arch cifar_resnet20 --data cifar10:train --mode etf+entropy --out m.safetensors

    Scores follow one sign convention: higher = more in-distribution.
    """


# Python parameters whose flag is not simply --name-with-dashes
_FLAGS = {"use_cache": "--no-cache", "progress": "--quiet", "cache_dir": "--cache", "scorer_params": "--scorer-param"}


def flag_for(parameter: str) -> str:
    """The command-line flag of a job parameter: ``fit_split`` -> ``--fit-split``."""
    return _FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return "warning: " + " ".join(str(message).split()) + "\n"


def _printable(path) -> str:
    """A path as text even when its name is not valid UTF-8 (undecodable bytes shown escaped)."""
    import os

    name = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _stopped(signum, frame):
    from ..distributed import DistributedError, world

    raise DistributedError(f"rank {world().rank} was stopped by the launcher (another rank failed or the run was "
                           "cancelled); nothing of this run was written: see the failing rank's error")


def _join_distributed() -> None:
    """Under torchrun: join the process group; ranks other than 0 print nothing but their errors,
    and a stop from the launcher (SIGTERM) ends this rank with one line. (A WORLD_SIZE that is
    not a number is init_from_env's one-line error.)"""
    import os
    import signal

    if os.environ.get("WORLD_SIZE", "").strip() in ("", "1"):
        return  # one process: nothing to import or join
    from ..distributed import init_from_env

    world = init_from_env()
    if not world.distributed:
        return
    signal.signal(signal.SIGTERM, _stopped)
    if not world.is_main:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process


def main(argv=None) -> None:
    """Console entry point: runs the group and turns user mistakes into one-line errors, exit 2.

    Under torchrun, every rank leaves with ``os._exit`` once its output is flushed: the backend's
    threads are then not torn down under a peer that is still running or already gone (which
    aborts a process at exit, with a second line on stderr). Everything a run writes is complete
    (atomic renames) before that point."""
    import os

    try:
        _main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not _leave_hard(code):
            raise
    if _leave_hard(code):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _leave_hard(code: int) -> bool:
    """Under torchrun: every rank (its CSVs and cache entries are complete files by then)."""
    from ..distributed import world

    return world().distributed


def _main(argv=None) -> None:
    warnings.formatwarning = _one_line_warning  # a warning is one line too, without the source line
    try:
        _join_distributed()  # under torchrun every rank leaves through os._exit in main(), group left as is
        cli.main(args=argv, prog_name="ncprobe", standalone_mode=False)
    except NcprobeError as exc:
        message = exc.render(flag_for) if isinstance(exc, ParameterError) else str(exc)
        click.echo(f"error: {message}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help())
        sys.exit(2)
    except click.UsageError as exc:
        hint = ""
        if exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a full disk, a read-only folder, a vanished file: never a traceback
        where = exc.filename if exc.filename is not None else "(file system)"
        reason = exc.strerror or type(exc).__name__
        click.echo(f"error: {_printable(where)}: {reason}; check the path, its permissions and the free space",
                   err=True)
        sys.exit(2)
    except MemoryError as exc:
        what = " ".join(str(exc).split()) or "an allocation failed"
        click.echo(f"error: out of memory ({what}); set a smaller --memory-budget so that features spill to "
                   "disk, store them as --cache-dtype float16, or probe fewer --layers", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
