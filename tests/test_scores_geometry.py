"""featnorm and ncc against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from ncprobe.scores import get_scorer
from ncprobe.stats import ClassStats


def _data(seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 300)
    x = 3 * rng.standard_normal((4, 10))[y] + rng.standard_normal((300, 10)) + 1.0
    return x, y, rng.standard_normal((50, 10))


def test_featnorm():
    x, y, z = _data()
    np.testing.assert_allclose(
        get_scorer("featnorm").fit().score(z), np.linalg.norm(z, axis=1), rtol=1e-12
    )
    np.testing.assert_allclose(
        get_scorer("featnorm").fit(x).score(z), np.linalg.norm(z, axis=1), rtol=1e-12
    )


@pytest.mark.parametrize("center", [True, False])
def test_ncc(center):
    x, y, z = _data(1)
    mus = np.stack([x[y == k].mean(0) for k in range(4)])
    c = mus.mean(0) if center else np.zeros(10)
    cos = [
        [(q - c) @ (m - c) / np.linalg.norm(q - c) / np.linalg.norm(m - c) for m in mus] for q in z
    ]
    want = np.max(cos, axis=1)
    np.testing.assert_allclose(
        get_scorer("ncc", center=center).fit(x, y).score(z), want, rtol=1e-10
    )
    stats = ClassStats.from_features(x, y, 4)
    np.testing.assert_allclose(
        get_scorer("ncc", center=center).fit(stats=stats).score(z), want, rtol=1e-10
    )


def test_ncc_centre_row_scores_zero():
    x, y, z = _data(2)
    s = get_scorer("ncc").fit(x, y)
    assert s.score(s.center_[None, :]).tolist() == [0.0]
