"""The columns of every output table, and the one helper that stamps a run's metadata onto a table.

Each table is long-format: one row per measured thing (a layer, a layer x scorer x OOD set, ...),
with the run's identity repeated on every row so that tables from many runs can be concatenated
and grouped. The column lists here are the only definition of those tables.
"""

from __future__ import annotations

import datetime as _dt
import secrets
from dataclasses import asdict, dataclass, fields

import pandas as pd

from .. import __version__
from ..stats.collapse import NC_COLUMNS

#: ood.csv: one row per (layer, scorer, OOD set)
OOD_COLUMNS = ["run_id", "timestamp", "checkpoint", "checkpoint_sha256", "arch", "mode", "id", "fit", "ood",
               "ood_group", "layer", "layer_index", "dim", "scorer", "params", "tuned_on", "auroc", "aupr_in", "aupr_out",
               "aupr_in_trapz", "aupr_out_trapz", "fpr95", "fpr95_oodpos",
               "id_accuracy", "n_fit", "n_id", "n_ood", "seed", "group", "recipe", "epoch", "mean", "std", "norm_origin", "ncprobe_version"]
#: collapse.csv: one row per probed layer of the fit (or --data) set
COLLAPSE_COLUMNS = ["checkpoint", "checkpoint_sha256", "arch", "data", "layer", "layer_index", "dim", "n",
                    "classes", *NC_COLUMNS, "run_id", "timestamp", "mode", "group", "recipe", "epoch", "mean", "std", "norm_origin"]
#: transfer.csv: one row per (transfer set, layer)
TRANSFER_COLUMNS = ["run_id", "timestamp", "checkpoint", "checkpoint_sha256", "arch", "mode", "transfer", "layer",
                    "layer_index", "dim", "transfer_acc", "n_train", "n_test", "transfer_classes", "seed", "group"]
#: trajectory.csv: one row per (checkpoint or tracked epoch, layer, metric); ``metric`` is an NC column
#: (nc1, ...) or ``auroc`` (then ``scorer`` and ``ood`` say which); ``step`` is the position in the trajectory
TRAJECTORY_COLUMNS = ["run_id", "timestamp", "checkpoint", "checkpoint_sha256", "arch", "mode", "recipe", "group",
                      "seed", "data", "epoch", "step", "layer", "layer_index", "metric", "scorer", "ood", "value", "n",
                      "mean", "std", "norm_origin", "ncprobe_version"]
#: correlation.csv: one row per correlated quantity (NC1 vs a scorer's FPR95, NC1 vs transfer error)
CORRELATION_COLUMNS = ["x", "y", "n_layers", "pearson_r", "pearson_p", "spearman_rho", "spearman_p", "run_id",
                       "checkpoint", "arch", "mode", "group"]


def new_run_id(now: _dt.datetime | None = None) -> str:
    """A run id: the UTC time (``YYYYmmdd-HHMMSS``) and 6 random hex digits."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


@dataclass(frozen=True)
class RunInfo:
    """Who and when: the columns every row of one run shares."""

    run_id: str
    timestamp: str
    checkpoint: str
    checkpoint_sha256: str
    arch: str
    mode: str
    group: str
    seed: int
    recipe: str = ""
    epoch: int | None = None
    mean: str = ""
    std: str = ""
    norm_origin: str = ""
    ncprobe_version: str = __version__

    @classmethod
    def new(cls, ckpt, *, group: str | None = None, seed: int = 0) -> RunInfo:
        """A fresh run id (UTC time + 6 random hex digits) for checkpoint ``ckpt``."""
        now = _dt.datetime.now(_dt.timezone.utc)
        return cls(run_id=new_run_id(now),
                   timestamp=now.isoformat(timespec="seconds"), checkpoint=ckpt.name,
                   checkpoint_sha256=ckpt.sha256, arch=ckpt.arch, mode=ckpt.mode, group=group or "", seed=seed,
                   recipe=ckpt.recipe_id, epoch=ckpt.epoch,
                   mean="/".join(f"{v:g}" for v in ckpt.mean), std="/".join(f"{v:g}" for v in ckpt.std),
                   norm_origin=str(ckpt.origin.get("mean", "")))


#: Columns that name things (run ids, times, file names, hashes, dataset specs, layer and scorer names,
#: parameter strings, group tags): read and written as text, never re-typed, so ``007`` stays ``007``,
#: ``NA`` stays ``NA`` and an empty group stays empty. The text fields of :class:`RunInfo` plus the
#: name columns of the tables above; every other column is a number.
IDENTIFIER_COLUMNS: frozenset[str] = frozenset(
    [f.name for f in fields(RunInfo) if f.type in ("str", str)]
    + ["id", "fit", "ood", "ood_group", "layer", "scorer", "params", "tuned_on", "data", "transfer", "x", "y"]
)


def stamp(table: pd.DataFrame, run: RunInfo, columns: list[str], **extra) -> pd.DataFrame:
    """A copy of ``table`` with the run's fields (and ``extra`` values) filled in where ``columns``
    has them, reordered to ``columns``."""
    out = table.copy()
    for key, value in {**asdict(run), **extra}.items():
        if key in columns:
            out[key] = value
    return out.reindex(columns=columns)
