"""ImageNet-1K scale on one machine: time and peak memory of each stage as the fit set grows.

Synthetic features with C = 1000 classes at d = 2048 (ResNet-50's penultimate width; d = 512 for
kNN), fit sizes N = 50k, 200k, 1.28M (``--quick``: 50k and 200k). Every stage runs in a fresh
subprocess, so its peak RSS (``os.wait4``'s ``ru_maxrss`` of that child) is its own:

* ``stats``        ClassStats accumulated from seeded chunks generated on the fly (never materialized);
* ``nc``           the NC metrics from the saved statistics, NCC accuracy streamed over the chunks again;
* ``mahalanobis``  fitted from the statistics alone, scoring ``--queries`` ID + OOD rows;
* ``gda``          the full-width fit is estimated and refused (C float64 covariances at d = 2048 =
                   33.5 GB) unless the budget allows it; then ``gda.max_dim=128`` on the fit matrix
                   (float32, read one class at a time): this stage holds the matrix, so it grows with N;
* ``knn-*``        exact (``index=auto``), ``index=ivf`` with its measured recall, and
                   ``fit_fraction=0.01``: the index holds the (sub)set, so exact/IVF grow with N;
* ``baseline``     the old way: the fit matrix materialized, statistics, NC metrics and Mahalanobis
                   fitted from the matrix (its float64 copy included);
* ``pood-*``       pytorch-ood's Mahalanobis (on ``--pood-queries`` rows: its per-class d x d
                   products are slow) and KNN on the same features; its GMM is not run (1000 full
                   covariances at d = 2048).

The ratio line covers the streaming stages (stats, nc, mahalanobis): their largest peak RSS and
their summed time at the largest N over the smallest N. The other stages' ratios are printed
separately.

    .venv/bin/python benchmarks/scale.py --quick [--threads 2]

Stage peaks are VmHWM read at the end of each child after resetting it (``/proc/self/clear_refs``)
once the libraries are imported; ``os.wait4``'s ``ru_maxrss`` of the child is kept alongside.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHUNK = 8192


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="stop at N = 200k")
    p.add_argument("--sizes", type=int, nargs="+", help="fit sizes (default 50k 200k 1.28M)")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--knn-dim", type=int, default=512)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--queries", type=int, default=4000, help="ID + OOD rows scored (half each)")
    p.add_argument("--pood-queries", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip", nargs="*", default=[], help="stages to leave out (e.g. pood-maha baseline)")
    p.add_argument("--stage", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


ARGS = _args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "LOKY_MAX_CPU_COUNT"):
    os.environ[var] = str(ARGS.threads)


# ----------------------------------------------------------------------------- features
def class_means(c: int, d: int, seed: int):
    import numpy as np

    return (0.12 * np.random.default_rng(seed).standard_normal((c, d))).astype(np.float32)


def chunks(n: int, c: int, d: int, stream: int, ood: bool = False):
    """Seeded chunks (x float32 (b, d), y (b,)) of n rows: chunk j depends on (d, stream, j) only."""
    import numpy as np

    means = class_means(c, d, 1000 + d + (1 if ood else 0))
    if ood:
        means = 0.5 * means  # OOD: other, weaker class directions and a wider spread
    for j, s in enumerate(range(0, n, CHUNK)):
        rng = np.random.default_rng([d, stream, j])
        b = min(CHUNK, n - s)
        y = rng.integers(0, c, b)
        x = rng.standard_normal((b, d), dtype=np.float32)
        if ood:
            x *= 1.15
        x += means[y]
        yield x, y


def materialize(n, c, d, stream=0):
    import numpy as np

    x = np.empty((n, d), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    s = 0
    for xb, yb in chunks(n, c, d, stream):
        x[s : s + len(xb)], y[s : s + len(xb)] = xb, yb
        s += len(xb)
    return x, y


def queries(q, c, d):
    import numpy as np

    idx = np.concatenate([xb for xb, _ in chunks(q // 2, c, d, stream=7)])
    ood = np.concatenate([xb for xb, _ in chunks(q - q // 2, c, d, stream=8, ood=True)])
    return idx, ood


# ----------------------------------------------------------------------------- stages (children)
def _stats_path(a):
    return Path(a.workdir) / f"stats_{a.n}.npz"


def _load_stats(a):
    import numpy as np

    from ncprobe.stats import ClassStats

    z = np.load(_stats_path(a))
    st = ClassStats(a.classes, a.dim)
    st.counts, st.means, st.within_scatter, st.class_sq = z["counts"], z["means"], z["within_scatter"], z["class_sq"]
    return st


def _auroc(s_id, s_ood):
    from ncprobe.metrics import auroc

    return round(float(auroc(s_id, s_ood)), 4)


def stage(a) -> dict:
    import warnings

    import numpy as np

    from ncprobe.scores import get_scorer
    from ncprobe.scores.base import params_string
    from ncprobe.stats import ClassStats

    c, d, n = a.classes, a.dim, a.n
    out = {}
    if a.stage == "stats":
        st = ClassStats(c, d)
        for xb, yb in chunks(n, c, d, 0):
            st.update(xb, yb)
        np.savez(_stats_path(a), counts=st.counts, means=st.means, within_scatter=st.within_scatter,
                 class_sq=st.class_sq)
        out["classes_present"] = int(st.present.size)
    elif a.stage == "nc":
        from ncprobe.stats.collapse import collapse_metrics, ncc_counts

        st = _load_stats(a)
        m = collapse_metrics(st)
        correct = 0
        for xb, yb in chunks(n, c, d, 0):
            correct += ncc_counts(st, xb, yb)["ncc_correct"]
        out.update(nc1=round(m["nc1"], 4), ncc_acc=round(correct / n, 4))
    elif a.stage == "mahalanobis":
        st = _load_stats(a)
        s = get_scorer("mahalanobis").fit(stats=st)
        qi, qo = queries(a.queries, c, d)
        out["auroc"] = _auroc(s.score(qi), s.score(qo))
    elif a.stage == "gda":
        from ncprobe.errors import ScoringError

        x, y = materialize(n, c, d)
        try:
            get_scorer("gda").fit(x, y)
            out["full"] = "fitted"
        except ScoringError as err:
            out["full_refusal"] = str(err)
        st = _load_stats(a)
        s = get_scorer("gda", max_dim=128).fit(x, y, stats=st)
        del x
        qi, qo = queries(a.queries, c, d)
        out.update(auroc=_auroc(s.score(qi), s.score(qo)), params=params_string(s.effective_params()),
                   estimate_gib=round(s.memory_estimate_ / 2**30, 3))
    elif a.stage.startswith("knn-"):
        dk = a.knn_dim
        x, _ = materialize(n, c, dk)
        variant = a.stage[4:]
        params = {"exact": {}, "ivf": {"index": "ivf"}, "fraction": {"fit_fraction": 0.01}}[variant]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s = get_scorer("knn", k=a.k, **params).fit(x)
        del x
        qi, qo = queries(a.queries, c, dk)
        out.update(auroc=_auroc(s.score(qi), s.score(qo)), params=params_string(s.effective_params()),
                   backend=s.backend_, note=" | ".join(str(w.message) for w in caught))
    elif a.stage == "baseline":
        from ncprobe.stats.collapse import collapse_metrics

        x, y = materialize(n, c, d)
        st = ClassStats.from_features(x, y, c)
        m = collapse_metrics(st, x, y)
        s = get_scorer("mahalanobis").fit(x, y)  # the fit matrix again, as float64
        qi, qo = queries(a.queries, c, d)
        out.update(nc1=round(m["nc1"], 4), ncc_acc=round(m["ncc_acc"], 4), auroc=_auroc(s.score(qi), s.score(qo)))
    elif a.stage.startswith("pood-"):
        import torch

        torch.set_num_threads(a.threads)
        import pytorch_ood.detector as pood

        dk = a.knn_dim if a.stage == "pood-knn" else d
        nq = a.queries if a.stage == "pood-knn" else a.pood_queries
        x, y = materialize(n, c, dk)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        det = pood.KNN(None, k=a.k) if a.stage == "pood-knn" else pood.Mahalanobis(None)
        det.fit_features(xt, yt)
        del x, xt
        qi, qo = queries(nq, c, dk)
        with torch.no_grad():
            si = -det.predict_features(torch.from_numpy(qi)).double().numpy()
            so = -det.predict_features(torch.from_numpy(qo)).double().numpy()
        out.update(auroc=_auroc(si, so), queries=nq)
    else:
        raise SystemExit(f"unknown stage {a.stage}")
    return out


# ----------------------------------------------------------------------------- driver
def run_child(name: str, n: int, workdir: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name, "--n", str(n), "--workdir", workdir,
           "--classes", str(ARGS.classes), "--dim", str(ARGS.dim), "--knn-dim", str(ARGS.knn_dim),
           "--k", str(ARGS.k), "--queries", str(ARGS.queries), "--pood-queries", str(ARGS.pood_queries),
           "--threads", str(ARGS.threads)]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=REPO)
        # wait4: this child's own resource usage (ru_maxrss in KiB on Linux)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    wall = time.perf_counter() - t0
    res = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[7:])
    if proc.returncode != 0 or not res:
        tail = (stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": tail[:200], "wall": wall}
    res["wall"] = wall
    res["process_rss_mib"] = usage.ru_maxrss / 1024
    return res


def _peak_rss_mib():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_main(a) -> None:
    import numpy  # noqa: F401  (the libraries every stage loads, before the peak is reset)
    import torch  # noqa: F401  (the pipeline has it loaded; the scorers ask it whether CUDA is present)

    import ncprobe.scores  # noqa: F401

    after_imports = _peak_rss_mib()

    try:  # reset the peak-RSS mark (Linux): ru_maxrss after exec can carry the parent's size at fork
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    t0 = time.perf_counter()
    out = stage(a)
    out["time"] = time.perf_counter() - t0  # the stage's work, without Python start-up and imports
    out["rss_mib"] = _peak_rss_mib()
    out["imports_mib"] = after_imports
    if a.stage == "stats":
        from ncprobe.budget import memory_budget

        out["budget_gib"] = round(memory_budget() / 2**30, 1)
    print("RESULT " + json.dumps(out), flush=True)


def main() -> int:
    import numpy as np

    sizes = ARGS.sizes or ([50_000, 200_000] if ARGS.quick else [50_000, 200_000, 1_280_000])
    import importlib.util

    have_pood = importlib.util.find_spec("pytorch_ood") is not None  # not imported here: keep this process small
    streaming = ["stats", "nc", "mahalanobis"]
    others = ["gda", "knn-exact", "knn-ivf", "knn-fraction", "baseline"]
    if have_pood:
        others += ["pood-maha", "pood-knn"]
    stages = [s for s in streaming + others if s not in ARGS.skip]
    print(f"scale benchmark: C = {ARGS.classes}, d = {ARGS.dim} (kNN d = {ARGS.knn_dim}, k = {ARGS.k}), "
          f"N = {', '.join(f'{n:,}' for n in sizes)}, {ARGS.queries} queries, {ARGS.threads} threads; "
          f"pytorch-ood {'installed' if have_pood else 'NOT installed: its detectors are not run'}")
    print("time = the stage's work (no start-up); RSS = the stage's peak resident memory in its own subprocess "
          "(imports included; the process's wait4 ru_maxrss in the JSON)")
    results: dict = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ncprobe-scale-") as workdir:
        for n in sizes:
            for name in stages:
                r = run_child(name, n, workdir)
                results[(name, n)] = r
                if "error" in r:
                    print(f"  N={n:>9,} {name:13s} FAILED: {r['error']}")
                    continue
                extra = {k: v for k, v in r.items()
                         if k not in ("time", "rss_mib", "wall", "full_refusal", "note", "process_rss_mib",
                                   "imports_mib")}
                print(f"  N={n:>9,} {name:13s} time {r['time']:8.2f} s  peak RSS {r['rss_mib']:8.0f} MiB  "
                      + " ".join(f"{k}={v}" for k, v in extra.items()), flush=True)
                if r.get("full_refusal"):
                    print(f"  {'':11s} gda refusal: {r['full_refusal']}")
                if r.get("note"):
                    print(f"  {'':11s} knn note: {r['note']}")
    lo, hi = sizes[0], sizes[-1]
    print(f"\nper-row costs at N={hi:,} (s per fit row): " + ", ".join(
        f"{s} {results[(s, hi)]['time'] / hi * 1e6:.2f} us" for s in stages
        if (s, hi) in results and "time" in results[(s, hi)] and s in ("stats", "nc", "baseline")))
    for name in stages:
        a, b = results.get((name, lo), {}), results.get((name, hi), {})
        if "time" in a and "time" in b:
            print(f"  {name:13s} N={hi:,}/N={lo:,}: peak RSS ratio {b['rss_mib'] / a['rss_mib']:.2f}, "
                  f"time ratio {b['time'] / a['time']:.2f}")
    ok = all("time" in results.get((s, n), {}) for s in streaming for n in (lo, hi))
    print(f"total wall {time.perf_counter() - t_all:.0f} s; the ratio line covers the streaming stages "
          f"{', '.join(streaming)} (largest peak RSS, summed time)")
    if not ok:
        print("scale: a streaming stage failed; no ratio")
        return 1
    rss = [max(results[(s, n)]["rss_mib"] for s in streaming) for n in (lo, hi)]
    tim = [float(np.sum([results[(s, n)]["time"] for s in streaming])) for n in (lo, hi)]
    print(f"scale: peak RSS ratio N=max/N=min = {rss[1] / rss[0]:.2f}, time ratio = {tim[1] / tim[0]:.2f}")
    return 0


if __name__ == "__main__":
    if ARGS.stage:
        child_main(ARGS)
    else:
        sys.exit(main())
