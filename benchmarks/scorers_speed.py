"""Speed of ncprobe's knn, mahalanobis and gda scorers against pytorch-ood and plain baselines.

Times fit + score (ID and OOD sets) of

* ncprobe ``knn`` vs pytorch-ood ``KNN`` (sklearn NearestNeighbors), and vs the bare float32
  matrix product every exact kNN must compute (queries x fit x dim, blocked, numpy and torch,
  the faster counts);
* ncprobe ``mahalanobis`` vs pytorch-ood ``Mahalanobis``;
* ncprobe ``gda`` vs pytorch-ood ``GMM`` (its closest GDA-like detector: per-class full covariance,
  but class-frequency weights and covariance / n_c + 1e-6 I) and vs a straightforward scipy
  implementation of the same definition (``multivariate_normal.logpdf`` per class + logsumexp);

checks that each pair's AUROCs (ID vs OOD) agree to 1e-3, and prints which speed targets are met:
knn >= 2x faster than pytorch-ood's KNN and within 1.5x of the bare product; mahalanobis and gda
>= 2x faster than pytorch-ood's. Every time is the best of ``--repeats`` runs; pytorch-ood's
detectors are fed 8192-row batches. Methods are timed round-robin so all see the same machine load.

Features: ``--features PATH`` (.npz with fit_x, fit_y, id_x, ood_x); ``--from-checkpoint [CKPT]``
(extracts penultimate features of ../shared/data with ncprobe.features; default CKPT the
CIFAR-10 ResNet-20 there); otherwise synthetic features (10 classes, d = 64 and 512,
n_fit = 10000, 10000 ID + 10000 OOD queries). Threads are limited to ``--threads`` (default 2).

    .venv/bin/python benchmarks/scorers_speed.py [--dims 64 512] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=Path, help=".npz with fit_x, fit_y, id_x, ood_x")
    p.add_argument(
        "--from-checkpoint",
        nargs="?",
        const=str(SHARED / "checkpoints" / "resnet20-12fca82f.th"),
        default=None,
        metavar="CKPT",
        help="extract penultimate features of ../shared/data with this checkpoint",
    )
    p.add_argument(
        "--ood",
        default="tin_val_resize.npz",
        help="OOD .npz in ../shared/data (with --from-checkpoint)",
    )
    p.add_argument("--save-features", type=Path, help="write the features used to this .npz")
    p.add_argument(
        "--dims", type=int, nargs="+", default=[64, 512], help="synthetic feature widths"
    )
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--n-fit", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=20000, help="ID + OOD queries (half each)")
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip", nargs="*", default=[], choices=["knn", "mahalanobis", "gda"])
    return p.parse_args(argv)


ARGS = _args()
# thread limits must be set before numpy / torch / faiss start their pools
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "LOKY_MAX_CPU_COUNT"):
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.special import logsumexp  # noqa: E402
from scipy.stats import multivariate_normal  # noqa: E402

from ncprobe.metrics import auroc  # noqa: E402
from ncprobe.scores import get_scorer  # noqa: E402

torch.set_num_threads(ARGS.threads)
try:
    import faiss

    faiss.omp_set_num_threads(ARGS.threads)
except ImportError:  # pragma: no cover
    faiss = None
try:
    import pytorch_ood.detector as pood
except ImportError:
    pood = None

BATCH = 8192


# ----------------------------------------------------------------------------- features
def synthetic(d: int, c: int, n_fit: int, n_test: int, seed: int = 0) -> dict:
    """Softplus ("post-ReLU-like") class clusters with anisotropic, class-specific covariance;
    OOD = samples pulled part of the way towards a second class, with wider spread (near-OOD,
    AUROCs well below 1). Float32, like extracted features."""
    rng = np.random.default_rng(seed)
    means = 1.2 * rng.standard_normal((c, d))
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    spectrum = (1.0 + np.arange(d)) ** -0.6  # decaying within-class variance
    mix = [
        (q * spectrum) @ (np.eye(d) + 0.3 * rng.standard_normal((d, d)) / np.sqrt(d))
        for _ in range(c)
    ]

    def sample(n, ood=False):
        y = rng.integers(0, c, n)
        centre = means[y]
        if ood:
            lam = rng.uniform(0.6, 0.9, (n, 1))
            centre = lam * means[y] + (1 - lam) * means[rng.integers(0, c, n)]
        x = np.empty((n, d))
        for k in range(c):
            idx = np.flatnonzero(y == k)
            x[idx] = (
                centre[idx]
                + (1.15 if ood else 1.0) * rng.standard_normal((idx.size, d)) @ mix[k].T * 2.0
            )
        return np.logaddexp(0.0, x).astype(np.float32), y

    fit_x, fit_y = sample(n_fit)
    id_x, _ = sample(n_test // 2)
    ood_x, _ = sample(n_test - n_test // 2, ood=True)
    return {"fit_x": fit_x, "fit_y": fit_y, "id_x": id_x, "ood_x": ood_x}


def from_checkpoint(ckpt_path: str, ood: str) -> dict:
    try:
        from ncprobe.checkpoint import load_checkpoint
        from ncprobe.data import load_dataset
        from ncprobe.features import extract_features
    except ImportError as exc:
        sys.exit(
            f"--from-checkpoint needs ncprobe.checkpoint/data/features, not importable yet ({exc})"
        )
    if not SHARED.is_dir():
        sys.exit(f"--from-checkpoint needs {SHARED}")
    ckpt = load_checkpoint(ckpt_path)
    out = {}
    for key, spec in (("fit", "cifar10_train.npz"), ("id", "cifar10_test.npz"), ("ood", ood)):
        fs = extract_features(ckpt, load_dataset(str(SHARED / spec)), layers=[], progress=False)
        out[f"{key}_x"] = fs["penultimate"]
        if key == "fit":
            out["fit_y"] = fs.labels
    return out


# ----------------------------------------------------------------------------- timing
def time_once(fn):
    """Wall time of fn() (best of up to 5 calls when one call takes under 0.2 s), and its result."""
    best, result, total = float("inf"), None, 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        best, total = min(best, dt), total + dt
        if total >= 0.2:
            break
    return best, result


def chunks(x):
    return [x[s : s + BATCH] for s in range(0, len(x), BATCH)]


def ours(name, data, **params):
    def run():
        s = get_scorer(name, **params).fit(data["fit_x"], data["fit_y"])
        run.scorer = s
        return s.score(data["id_x"]), s.score(data["ood_x"])

    return run


def pood_run(make, data, sign=-1.0):
    """pytorch-ood detector: fit_features, predict_features per batch; outlier score -> ours via sign."""

    def run():
        det = make()
        det.fit_features(torch.from_numpy(data["fit_x"]), torch.from_numpy(data["fit_y"]))
        with torch.no_grad():
            out = [
                sign
                * torch.cat([det.predict_features(torch.from_numpy(b)) for b in chunks(data[k])])
                .double()
                .numpy()
                for k in ("id_x", "ood_x")
            ]
        return out[0], out[1]

    return run


def scipy_gda(data):
    """The DDU definition written plainly with scipy: logsumexp_c multivariate_normal(mu_c, Sigma_c).logpdf."""

    def run():
        x, y = data["fit_x"].astype(np.float64), data["fit_y"]
        dists = []
        for k in np.unique(y):
            xk = x[y == k]
            dists.append(
                multivariate_normal(
                    xk.mean(0), np.cov(xk, rowvar=False, ddof=1), allow_singular=True
                )
            )
        return tuple(
            logsumexp(np.stack([g.logpdf(data[key].astype(np.float64)) for g in dists], 1), axis=1)
            for key in ("id_x", "ood_x")
        )

    return run


def bare_product(data):
    """The float32 product normalized queries x normalized fit^T, blocked into a reused buffer."""
    f = data["fit_x"] / np.linalg.norm(data["fit_x"], axis=1, keepdims=True)
    q = np.vstack([data["id_x"], data["ood_x"]])
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    f = np.ascontiguousarray(f, dtype=np.float32)
    bs = 4096
    buf = np.empty((bs, len(f)), np.float32)
    ft, qt, tbuf = torch.from_numpy(f), torch.from_numpy(q), torch.from_numpy(buf)

    def np_run():
        for s in range(0, len(q), bs):
            b = q[s : s + bs]
            np.matmul(b, f.T, out=buf[: len(b)])

    def torch_run():
        for s in range(0, len(q), bs):
            b = qt[s : s + bs]
            torch.mm(b, ft.T, out=tbuf[: len(b)])

    return np_run, torch_run


# ----------------------------------------------------------------------------- report
def bench(label: str, data: dict, args) -> tuple[list, list]:
    n_fit, d = data["fit_x"].shape
    n_q = len(data["id_x"]) + len(data["ood_x"])
    c = int(data["fit_y"].max()) + 1
    print(
        f"\n== {label}: fit {n_fit} x {d} ({c} classes), score {len(data['id_x'])} ID + "
        f"{len(data['ood_x'])} OOD, {args.threads} threads, best of {args.repeats} interleaved rounds =="
    )
    entries = []  # (key, title, fn, has_scores)
    if "knn" not in args.skip:
        knn = ours("knn", data, k=args.k)
        knn()
        entries.append(
            ("knn", f"ncprobe knn (k={args.k}, {knn.scorer.backend_} engine)", knn, True)
        )
        np_run, torch_run = bare_product(data)
        entries.append(("bare_np", f"bare product {n_q}x{n_fit}x{d} f32, numpy", np_run, False))
        entries.append(
            ("bare_torch", f"bare product {n_q}x{n_fit}x{d} f32, torch", torch_run, False)
        )
        if pood is not None:
            entries.append(
                (
                    "pood_knn",
                    f"pytorch-ood KNN (k={args.k}, sklearn)",
                    pood_run(lambda: pood.KNN(None, k=args.k), data),
                    True,
                )
            )
    if "mahalanobis" not in args.skip:
        entries.append(("maha", "ncprobe mahalanobis", ours("mahalanobis", data), True))
        if pood is not None:
            entries.append(
                (
                    "pood_maha",
                    "pytorch-ood Mahalanobis",
                    pood_run(lambda: pood.Mahalanobis(None), data),
                    True,
                )
            )
    if "gda" not in args.skip:
        entries.append(("gda", "ncprobe gda", ours("gda", data), True))
        if pood is not None:
            entries.append(
                (
                    "pood_gmm",
                    "pytorch-ood GMM (closest GDA-like)",
                    pood_run(lambda: pood.GMM(None), data),
                    True,
                )
            )
        entries.append(
            ("scipy_gda", "scipy multivariate_normal GDA (baseline)", scipy_gda(data), True)
        )

    times = {key: float("inf") for key, *_ in entries}
    aurocs = {}
    for _ in range(args.repeats):  # round robin: every method sees the same machine load
        for key, _, fn, has_scores in entries:
            t, out = time_once(fn)
            times[key] = min(times[key], t)
            if has_scores and key not in aurocs:
                aurocs[key] = auroc(*out)
    print(f"{'method':48s} {'time [s]':>9s} {'AUROC':>8s}")
    for key, title, _, has_scores in entries:
        print(f"{title:48s} {times[key]:9.3f} " + (f"{aurocs[key]:8.4f}" if has_scores else ""))

    targets, checks = [], []

    def faster(a, b, factor, what):
        if a in times and b in times:
            ratio = times[b] / times[a]
            targets.append((f"{what}: {ratio:.2f}x faster (target >= {factor}x)", ratio >= factor))

    def agree(a, b, what):
        if a in aurocs and b in aurocs:
            diff = abs(aurocs[a] - aurocs[b])
            checks.append(
                (
                    f"AUROC {what}: |{aurocs[a]:.4f} - {aurocs[b]:.4f}| = {diff:.1e} <= 1e-3",
                    diff <= 1e-3,
                )
            )

    if "knn" in times:
        bare = min(times["bare_np"], times["bare_torch"])
        ratio = times["knn"] / bare
        targets.append(
            (f"knn within 1.5x of the bare product ({bare:.3f} s): {ratio:.2f}x", ratio <= 1.5)
        )
    faster("knn", "pood_knn", 2, "knn vs pytorch-ood KNN")
    faster("maha", "pood_maha", 2, "mahalanobis vs pytorch-ood Mahalanobis")
    faster("gda", "pood_gmm", 2, "gda vs pytorch-ood GMM")
    faster("gda", "scipy_gda", 1, "gda vs scipy multivariate_normal (no target)")
    agree("knn", "pood_knn", "knn vs pytorch-ood KNN")
    agree("maha", "pood_maha", "mahalanobis vs pytorch-ood Mahalanobis")
    agree("gda", "pood_gmm", "gda vs pytorch-ood GMM")
    agree("gda", "scipy_gda", "gda vs scipy multivariate_normal")
    if pood is None:
        print(
            "pytorch-ood is not installed: its detectors were not timed (pip install pytorch-ood)"
        )
    print("speed targets:")
    for text, ok in targets:
        print(f"  [{'MET' if ok else 'NOT MET'}] {text}")
    print("agreement:")
    for text, ok in checks:
        print(f"  [{'OK' if ok else 'FAIL'}] {text}")
    return targets, checks


def main(args) -> int:
    sets = []
    if args.features is not None:
        z = np.load(args.features)
        sets.append(
            (
                f"features {args.features.name}",
                {k: z[k] for k in ("fit_x", "fit_y", "id_x", "ood_x")},
            )
        )
    elif args.from_checkpoint is not None:
        data = from_checkpoint(args.from_checkpoint, args.ood)
        sets.append((f"{Path(args.from_checkpoint).name} penultimate, cifar10 vs {args.ood}", data))
    else:
        for d in args.dims:
            sets.append((f"synthetic d={d}", synthetic(d, args.classes, args.n_fit, args.n_test)))
    for _, data in sets:
        data["fit_x"] = np.ascontiguousarray(data["fit_x"], dtype=np.float32)
        data["id_x"] = np.ascontiguousarray(data["id_x"], dtype=np.float32)
        data["ood_x"] = np.ascontiguousarray(data["ood_x"], dtype=np.float32)
        data["fit_y"] = np.asarray(data["fit_y"], dtype=np.int64)
    if args.save_features is not None:
        np.savez(args.save_features, **sets[0][1])
    print(
        f"numpy {np.__version__}, torch {torch.__version__}, faiss {getattr(faiss, '__version__', 'n/a')}, "
        f"pytorch-ood {'yes' if pood is not None else 'no'}; faiss GPU: "
        f"{'yes' if faiss is not None and hasattr(faiss, 'StandardGpuResources') else 'no'}"
    )
    all_checks = []
    for label, data in sets:
        _, checks = bench(label, data, args)
        all_checks += checks
    return 0 if all(ok for _, ok in all_checks) else 1


if __name__ == "__main__":
    sys.exit(main(ARGS))
