"""Gaussian feature scores: Mahalanobis (shared covariance), relative Mahalanobis, GDA (DDU).

All covariance work is float64.

* Mahalanobis / RMDS invert the covariance as a *pseudo-inverse* (as the reference code of Lee et
  al. does with ``sklearn``'s ``EmpiricalCovariance``/``pinvh``): eigenvalues below
  ``rcond * lambda_max`` (default ``rcond = d * eps``) are dropped, so rank-deficient covariances
  (collinear features, fewer samples than dimensions) give finite distances measured inside the
  span of the fit data. Distances use the whitening matrix ``Wh = V_r diag(lambda_r^-1/2)``:
  ``d_c(z) = ||Wh^T (z - mu_c)||^2 = ||a||^2 - 2 a.b_c + ||b_c||^2`` with ``a = Wh^T (z - m)``,
  ``b_c = Wh^T (mu_c - m)`` (m the mean of the class means, to limit cancellation): one GEMM for all
  classes.
* GDA keeps one full covariance per class; each is factored by Cholesky with a jitter raised until it
  succeeds (see :class:`GDA`), and the quadratic forms are batched triangular solves (BLAS ``trsm``).

Classes without fit samples are ignored (scores use the classes present in the fit labels).

Scale: Mahalanobis and RMDS fit from :class:`~ncprobe.stats.ClassStats` alone (O(C d + d^2), no fit
matrix). GDA reads the fit matrix one class at a time (a float32 memmap is not copied whole), keeps
C Cholesky factors (C d^2 float64: 33.5 GB for ImageNet's C = 1000 at d = 2048), estimates that
before allocating anything (:func:`gda_fit_bytes`) and refuses above the memory budget
(:mod:`ncprobe.budget`) in one line; ``max_dim`` projects onto the top principal directions of
Sigma_W first. ``backend='auto'`` runs the linear algebra in torch float64 on the GPU when CUDA is
present, else numpy/scipy on the CPU (``backend='torch', device='cpu'`` forces the torch code on
the CPU).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
from scipy.linalg.blas import dtrsm

from ..budget import check_memory, format_bytes
from ..errors import ScoringError
from ..stats._threads import single_blas_thread
from ..stats.accumulator import ClassStats
from ..validation import as_numpy
from .base import Scorer
from .registry import register_scorer

__all__ = ["Mahalanobis", "RMDS", "GDA", "whitener", "gda_fit_bytes", "principal_directions"]

_BACKENDS = ("auto", "numpy", "torch")
#: float64 elements of one batched triangular solve on the torch path (256 MB)
_TORCH_SOLVE_ELEMS = 1 << 25


def _check_backend(name: str, backend: str, device: str) -> None:
    if backend not in _BACKENDS:
        raise ScoringError(f"{name} backend must be 'auto', 'numpy' or 'torch', got {backend!r}")
    if not isinstance(device, str) or not device:
        raise ScoringError(f"{name} device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _torch_device(backend: str, device: str):
    """The torch device of the torch path, or None for the numpy path. 'auto' = torch on CUDA when
    present, numpy on the CPU; 'torch' = torch on ``device`` (auto: CUDA if present, else CPU)."""
    if backend == "numpy" or (backend == "auto" and device == "cpu"):
        return None
    import torch

    from ..device import resolve_device

    if backend == "auto" and device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else None
    return resolve_device(device)


def _to_torch(a, dev):
    import torch

    return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float64)).to(dev)


def _whitener_torch(cov: np.ndarray, rcond: float | None, dev):
    """:func:`whitener` in torch float64 on ``dev``: (d, r) tensor."""
    import torch

    c = _to_torch(cov, dev)
    lam, v = torch.linalg.eigh(0.5 * (c + c.T))
    if not bool(lam[-1] > 0) or not bool(torch.isfinite(lam).all()):
        raise ScoringError(
            "the fit covariance is zero or not finite (all fit features identical within classes?); "
            "check the features of this layer"
        )
    rc = cov.shape[0] * np.finfo(np.float64).eps if rcond is None else float(rcond)
    keep = lam > lam[-1] * rc
    return v[:, keep] / torch.sqrt(lam[keep])


def principal_directions(cov: np.ndarray, m: int) -> np.ndarray:
    """The m leading eigenvectors (d, m) of a symmetric matrix, largest eigenvalue first (float64)."""
    cov = np.asarray(cov, np.float64)
    with single_blas_thread():
        lam, v = np.linalg.eigh(0.5 * (cov + cov.T))
    return np.ascontiguousarray(v[:, ::-1][:, :m])


def gda_fit_bytes(dim: int, num_classes: int, largest_class: int, max_dim: int | None = None,
                  n_rows: int = 0) -> int:
    """Closed-form peak bytes of a GDA fit (and its fitted state), float64 throughout, m = min(d, max_dim):

    kept: K Cholesky factors 8 K m^2 + means 8 K m (+ projection 8 d m + centre 8 d when m < d);
    transient, one class at a time: its rows as float64 and, projected, 8 n_max (d + 2 m); the
    covariance and its Cholesky temporaries 8 * 5 m^2; the class order of the N fit rows 8 N; with
    m < d the eigendecomposition of Sigma_W 8 * 4 d^2.
    """
    d, k, n = int(dim), int(num_classes), int(largest_class)
    m = d if max_dim is None or max_dim >= d else int(max_dim)
    kept = k * m * m + k * m + ((d * m + d) if m < d else 0)
    transient = n * (d + 2 * m) + 5 * m * m + int(n_rows) + (4 * d * d if m < d else 0)
    return 8 * (kept + transient)


def whitener(cov: np.ndarray, rcond: float | None = None) -> np.ndarray:
    """Wh (d, r) with Wh Wh^T = pinv(cov): eigenvectors over sqrt(eigenvalue), tiny eigenvalues dropped."""
    cov = np.asarray(cov, np.float64)
    with single_blas_thread():
        lam, v = np.linalg.eigh(0.5 * (cov + cov.T))
    if not lam[-1] > 0 or not np.isfinite(lam).all():
        raise ScoringError(
            "the fit covariance is zero or not finite (all fit features identical within classes?); "
            "check the features of this layer"
        )
    rc = cov.shape[0] * np.finfo(np.float64).eps if rcond is None else float(rcond)
    keep = lam > lam[-1] * rc
    return v[:, keep] / np.sqrt(lam[keep])


def _stats_from(x, y, stats: ClassStats | None) -> ClassStats:
    if stats is not None:
        return stats
    # large batches (about 4M values) keep the per-batch overhead small at low d
    rows = max(4096, (1 << 22) // x.shape[1])
    return ClassStats.from_features(x, y, int(y.max()) + 1, batch_size=rows)


class _SharedGaussian(Scorer):
    needs_labels = True
    execution_params = ("backend", "device")

    def __init__(self, rcond: float | None = None, backend: str = "auto", device: str = "auto"):
        super().__init__()
        if rcond is not None and not 0 <= float(rcond) < 1:
            raise ScoringError(f"{self.name} rcond must be in [0, 1) (or None for the default), got {rcond}")
        _check_backend(self.name, backend, device)
        self.rcond = rcond
        self.backend = backend
        self.device = device

    def _can_use_stats(self) -> bool:
        return True

    def _fit_classes(self, stats: ClassStats) -> None:
        p = stats.present
        self.classes_ = p
        self.center_ = stats.means[p].mean(axis=0)
        self._dev = _torch_device(self.backend, self.device)
        self.backend_ = "numpy" if self._dev is None else f"torch-{self._dev.type}"
        if self._dev is None:
            self.whiten_ = whitener(stats.sigma_w, self.rcond)
            self.center_w_ = self.center_ @ self.whiten_
            self.means_w_ = (stats.means[p] - self.center_) @ self.whiten_  # (K, r)
            self.means_sq_ = np.einsum("ij,ij->i", self.means_w_, self.means_w_)
            return
        wh = _whitener_torch(stats.sigma_w, self.rcond, self._dev)
        means_w = (_to_torch(stats.means[p], self._dev) - _to_torch(self.center_, self._dev)) @ wh
        self._t = {"whiten": wh, "center_w": _to_torch(self.center_, self._dev) @ wh, "means_w": means_w,
                   "means_sq": (means_w * means_w).sum(1)}
        self.whiten_ = wh.cpu().numpy()
        self.center_w_ = self._t["center_w"].cpu().numpy()
        self.means_w_ = means_w.cpu().numpy()
        self.means_sq_ = self._t["means_sq"].cpu().numpy()

    def _class_distances(self, x: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distances (n, K) to every present class under Sigma_W^+."""
        a = x @ self.whiten_
        a -= self.center_w_
        d = np.einsum("ij,ij->i", a, a)[:, None] - 2.0 * (a @ self.means_w_.T) + self.means_sq_
        return np.maximum(d, 0.0)

    def _class_distances_torch(self, xt):
        t = self._t
        a = xt @ t["whiten"] - t["center_w"]
        d = (a * a).sum(1)[:, None] - 2.0 * (a @ t["means_w"].T) + t["means_sq"]
        return d.clamp_min(0.0)


@register_scorer
class Mahalanobis(_SharedGaussian):
    """Mahalanobis distance to the closest class (Lee et al., NeurIPS 2018).
    score = -min_c (z - mu_c)^T Sigma_W^+ (z - mu_c), Sigma_W the shared within-class covariance."""

    name = "mahalanobis"
    default = True
    paper = "Lee et al., NeurIPS 2018"

    def _fit(self, x, y, head, stats) -> None:
        """Uses ``stats`` (means, Sigma_W) when given, without re-reading the features."""
        self._fit_classes(_stats_from(x, y, stats))

    def _score_batch(self, x):
        if self._dev is not None:
            d = self._class_distances_torch(_to_torch(x, self._dev))
            return (-d.min(dim=1).values).cpu().numpy()
        return -self._class_distances(x).min(axis=1)


@register_scorer
class RMDS(_SharedGaussian):
    """Relative Mahalanobis distance (Ren et al. 2021, "A simple fix to Mahalanobis distance").
    score = -min_c [MD_c(z) - MD_0(z)], MD_0 under one Gaussian N(mean, total covariance) of all fit data."""

    name = "rmds"
    default = True
    paper = "Ren et al., arXiv 2021"

    def _fit(self, x, y, head, stats) -> None:
        stats = _stats_from(x, y, stats)
        self._fit_classes(stats)
        self.bg_mean_ = stats.sample_mean
        if self._dev is None:
            self.bg_whiten_ = whitener(stats.total_scatter / stats.n, self.rcond)
            return
        self._t["bg_whiten"] = _whitener_torch(stats.total_scatter / stats.n, self.rcond, self._dev)
        self._t["bg_mean"] = _to_torch(self.bg_mean_, self._dev)
        self.bg_whiten_ = self._t["bg_whiten"].cpu().numpy()

    def _score_batch(self, x):
        if self._dev is not None:
            xt = _to_torch(x, self._dev)
            b = (xt - self._t["bg_mean"]) @ self._t["bg_whiten"]
            return ((b * b).sum(1) - self._class_distances_torch(xt).min(dim=1).values).cpu().numpy()
        b = (x - self.bg_mean_) @ self.bg_whiten_
        md0 = np.einsum("ij,ij->i", b, b)
        return md0 - self._class_distances(x).min(axis=1)


@register_scorer
class GDA(Scorer):
    """Gaussian discriminant analysis log-density, the DDU score (Mukhoti et al., CVPR 2023).
    score = logsumexp_c log N(z; mu_c, Sigma_c), Sigma_c = X_c^T X_c / (n_c - 1) (+ jitter), uniform weights.

    Each Sigma_c (float64) is Cholesky-factored as is; if that fails, a jitter ``eps * s_c * I`` with
    ``s_c`` the mean diagonal of Sigma_c is added, starting at ``eps = jitter`` and multiplied by 10
    until the factorization succeeds (``jitter_`` records what each class needed; at most ``s_c``).
    A class with a single fit sample has no covariance: ScoringError (no silent fallback). Class
    weights are uniform and left out, as in DDU (a constant shift of every score).

    Memory: the fit is estimated first (:func:`gda_fit_bytes`, about 8 C d^2 bytes) and refused in
    one line above the budget (:mod:`ncprobe.budget`; GPU memory on the torch CUDA path).
    ``max_dim`` (None: off): where the width d exceeds it, features are first projected onto the
    ``max_dim`` leading eigenvectors of the within-class covariance Sigma_W (about the sample mean)
    and the densities are those of the projections (``max_dim`` then shows in ``params``).
    ``backend``/``device``: see the module docstring.
    """

    name = "gda"
    default = True
    paper = "Mukhoti et al., CVPR 2023"
    min_per_class = 2
    needs_labels = True
    execution_params = ("backend", "device")
    optional_params = ("max_dim",)
    _fit_in_blocks = True

    def __init__(self, jitter: float = 1e-12, max_dim: int | None = None, backend: str = "auto",
                 device: str = "auto"):
        super().__init__()
        if not float(jitter) > 0:
            raise ScoringError(f"gda jitter must be > 0, got {jitter}")
        if max_dim is not None and int(max_dim) < 1:
            raise ScoringError(f"gda max_dim must be >= 1 (or None for no cap), got {max_dim}")
        _check_backend(self.name, backend, device)
        self.jitter = float(jitter)
        self.max_dim = None if max_dim is None else int(max_dim)
        self.backend = backend
        self.device = device

    def _extra_params(self) -> dict:
        return {"max_dim": self.dim_model_} if self.dim_model_ < self.dim_ else {}

    def _check_budget(self, d: int, m: int, k: int, n_max: int, n_rows: int, dev) -> None:
        need = gda_fit_bytes(d, k, n_max, m if m < d else None, n_rows)
        self.memory_estimate_ = need
        alternatives = (f"use 'mahalanobis' or 'rmds' (one shared covariance, {format_bytes(8 * d * d)}), "
                        f"or cap the dimension (gda.max_dim, e.g. {max(1, m // 4)})")
        what = f"gda at d={m} with {k} classes ({k} float64 covariances)"
        if dev is not None and dev.type == "cuda":
            import torch

            free = int(torch.cuda.mem_get_info(dev)[0])
            if need > free:
                raise ScoringError(f"{what} needs about {format_bytes(need)} but the GPU has "
                                   f"{format_bytes(free)} free; {alternatives}, or use gda.device=cpu")
            need = 8 * n_max * (d + 2 * m)  # host side: one class's rows at a time
        check_memory(need, what, alternatives, ScoringError)

    def _fit(self, x, y, head, stats) -> None:
        counts = np.bincount(y)
        classes = np.flatnonzero(counts)
        single = classes[counts[classes] == 1]
        if single.size:
            raise ScoringError(
                f"GDA needs >= 2 fit samples per class for a covariance but class(es) "
                f"{', '.join(map(str, single[:10].tolist()))} have 1; add samples, drop those classes, "
                "or use the 'mahalanobis' scorer (shared covariance)"
            )
        d = x.shape[1]
        m = d if self.max_dim is None or self.max_dim >= d else self.max_dim
        k = classes.size
        dev = _torch_device(self.backend, self.device)
        self._dev = dev
        self.backend_ = "numpy" if dev is None else f"torch-{dev.type}"
        self._check_budget(d, m, k, int(counts.max()), x.shape[0], dev)
        self.dim_model_ = m
        self.proj_ = self.proj_center_ = None
        if m < d:
            st = stats if stats is not None else _stats_from(x, y, None)
            self.proj_ = principal_directions(st.sigma_w, m)
            self.proj_center_ = st.sample_mean
        order = np.argsort(y, kind="stable")
        ends = np.cumsum(counts[classes])
        starts = ends - counts[classes]
        if dev is None:
            chols = np.empty((k, m, m))
            means = np.empty((k, m))
        else:
            import torch

            chols = torch.empty((k, m, m), dtype=torch.float64, device=dev)
            means = torch.empty((k, m), dtype=torch.float64, device=dev)
        scales = np.empty(k)
        jitters = np.zeros(k)
        deferred = []

        def class_cov(i):
            xc = as_numpy(x[order[starts[i]:ends[i]]], np.float64)
            if self.proj_ is not None:
                xc = (xc - self.proj_center_) @ self.proj_
            if dev is not None:
                xc = _to_torch(xc, dev)
            mu = xc.mean(axis=0)
            xc = xc - mu
            cov = xc.T @ xc / (xc.shape[0] - 1)
            means[i] = mu
            return cov

        for i in range(k):
            cov = class_cov(i)
            scales[i] = float((cov.diagonal().mean()) if dev is not None else np.mean(np.diag(cov)))
            if scales[i] > 0:
                chols[i], jitters[i] = self._cholesky(0.5 * (cov + cov.T), scales[i], int(classes[i]))
            else:
                deferred.append(i)
            del cov
        fallback_scale = float(np.mean(scales))
        for i in deferred:  # zero-variance classes: jitter on the scale of the others
            cov = class_cov(i)
            chols[i], jitters[i] = self._cholesky(0.5 * (cov + cov.T), fallback_scale, int(classes[i]))
        diag = chols.diagonal(dim1=1, dim2=2) if dev is not None else np.diagonal(chols, axis1=1, axis2=2)
        logdet = 2.0 * (diag.log().sum(1).cpu().numpy() if dev is not None else np.sum(np.log(diag), axis=1))
        self.classes_ = classes
        self.means_ = means.cpu().numpy() if dev is not None else means
        self.chol_ = chols  # (K, m, m) lower factors; a torch tensor on the torch path
        self.logdet_ = logdet
        self.jitter_ = jitters
        self._const = m * math.log(2.0 * math.pi)
        if dev is not None:
            self._t = {"means": means, "logdet": _to_torch(logdet, dev)}
            if self.proj_ is not None:
                self._t["proj"] = _to_torch(self.proj_, dev)
                self._t["proj_center"] = _to_torch(self.proj_center_, dev)

    def _cholesky(self, cov, scale: float, c: int):
        if not scale > 0:
            raise ScoringError(
                f"all fit features are identical (zero covariance), class {c} cannot be modelled; "
                "check the features of this layer"
            )
        n_steps = max(0, math.floor(-math.log10(self.jitter) + 1e-9)) + 1  # jitter * 10^k <= 1
        tries = [0.0] + [self.jitter * 10.0**k * scale for k in range(n_steps)]
        if self._dev is not None:
            import torch

            eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
            for jit in tries:
                chol, info = torch.linalg.cholesky_ex(cov + jit * eye if jit else cov)
                if int(info) == 0 and bool(torch.isfinite(chol).all()) and bool((chol.diagonal() > 0).all()):
                    return chol, jit
        else:
            eye = np.eye(cov.shape[0])
            with single_blas_thread():
                for jit in tries:
                    try:
                        chol = scipy.linalg.cholesky(
                            cov + jit * eye if jit else cov, lower=True, check_finite=False
                        )
                    except np.linalg.LinAlgError:
                        continue
                    diag = np.diag(chol)
                    if np.all(np.isfinite(chol)) and np.all(diag > 0):
                        return chol, jit
        raise ScoringError(
            f"the covariance of class {c} stays singular even with a jitter of its mean variance; "
            "the features of this class are degenerate - use the 'mahalanobis' scorer"
        )

    def _score_batch(self, x):
        if self._dev is not None:
            return self._score_torch(x)
        if self.proj_ is not None:
            x = (x - self.proj_center_) @ self.proj_
        logp = np.empty((x.shape[0], len(self.chol_)))
        centered = np.empty_like(x)
        for k, (mu, chol) in enumerate(zip(self.means_, self.chol_, strict=True)):
            np.subtract(x, mu, out=centered)
            # solve L y = (z - mu)^T for all rows at once (in place): ||y||^2 is the quadratic form
            y = dtrsm(1.0, chol, centered.T, lower=1, overwrite_b=1)
            logp[:, k] = np.einsum("ij,ij->j", y, y)
        logp += self.logdet_ + self._const
        logp *= -0.5
        top = logp.max(axis=1)
        return np.log(np.exp(logp - top[:, None]).sum(axis=1)) + top

    def _score_torch(self, x):
        import torch

        t = self._t
        xt = _to_torch(x, self._dev)
        if self.proj_ is not None:
            xt = (xt - t["proj_center"]) @ t["proj"]
        n, m = xt.shape
        k = self.chol_.shape[0]
        quad = torch.empty((n, k), dtype=torch.float64, device=self._dev)
        step = max(1, _TORCH_SOLVE_ELEMS // max(1, n * m))
        for a in range(0, k, step):
            b = min(k, a + step)
            rhs = (xt.T[None, :, :] - t["means"][a:b, :, None])  # (kb, m, n)
            sol = torch.linalg.solve_triangular(self.chol_[a:b], rhs, upper=False)
            quad[:, a:b] = (sol * sol).sum(1).T
        logp = -0.5 * (quad + t["logdet"] + self._const)
        return torch.logsumexp(logp, dim=1).cpu().numpy()
