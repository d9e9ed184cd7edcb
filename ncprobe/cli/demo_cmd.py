"""`ncprobe demo`: the main job on scikit-learn's digits, no download."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-out"), show_default=True,
              help="Where checkpoints, CSVs and plots go.")
@click.option("--epochs", type=click.IntRange(min=1), default=15, show_default=True, help="Training epochs per recipe.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def command(out, epochs, seed, quiet):
    """Train a small CNN on digits 0-5 three ways (ce, l2, etf+entropy), probe every layer, rank them.

    Near-OOD: digits 6-9. Far-OOD: crops of scikit-learn's sample photographs. Plus Gaussian noise.
    Everything it needs ships with the install; it takes a minute or two on a laptop CPU.
    """
    from ..demo import run_demo

    run_demo(out, epochs=epochs, seed=seed, progress=not quiet, cache_dir=out / "cache")
