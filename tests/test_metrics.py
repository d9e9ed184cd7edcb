"""OOD metrics against scikit-learn and a brute-force threshold sweep."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from ncprobe.errors import ScoringError
from ncprobe.metrics import aupr_in, aupr_out, auroc, fpr95, fpr95_oodpos, ood_metrics


def _sklearn(s_id, s_ood):
    s = np.concatenate([s_id, s_ood])
    is_id = np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))]
    fpr, tpr, _ = roc_curve(is_id, s, drop_intermediate=False)
    fpr_o, tpr_o, _ = roc_curve(1 - is_id, -s, drop_intermediate=False)
    return {
        "auroc": roc_auc_score(is_id, s),
        "aupr_in": average_precision_score(is_id, s),
        "aupr_out": average_precision_score(1 - is_id, -s),
        "fpr95": fpr[np.argmax(tpr >= 0.95)],
        "fpr95_oodpos": fpr_o[np.argmax(tpr_o >= 0.95)],
    }


def _brute_fpr95(s_id, s_ood):
    """Scan every candidate threshold: the largest t keeping >= 95% of ID, OOD fraction >= t."""
    best = None
    for t in np.unique(np.concatenate([s_id, s_ood])):
        if np.mean(s_id >= t) >= 0.95:
            best = t
    return np.mean(s_ood >= best)


def _brute_fpr95_oodpos(s_id, s_ood):
    best = None
    for t in np.unique(np.concatenate([s_id, s_ood]))[::-1]:
        if np.mean(s_ood <= t) >= 0.95:
            best = t
    return np.mean(s_id <= best)


CASES = [
    (n_id, n_ood, ties)
    for n_id, n_ood in [(1, 1), (3, 7), (20, 20), (101, 57), (1000, 3000)]
    for ties in (False, True)
]


@pytest.mark.parametrize("n_id,n_ood,ties", CASES)
def test_equals_sklearn_and_brute_force(n_id, n_ood, ties):
    rng = np.random.default_rng(n_id * 7 + n_ood + ties)
    s_id = rng.normal(0.7, 1.0, n_id)
    s_ood = rng.normal(0.0, 1.0, n_ood)
    if ties:
        s_id, s_ood = np.round(s_id * 2), np.round(s_ood * 2)
    got = ood_metrics(s_id, s_ood)
    want = _sklearn(s_id, s_ood)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert got["fpr95"] == pytest.approx(_brute_fpr95(s_id, s_ood), abs=1e-12)
    assert got["fpr95_oodpos"] == pytest.approx(_brute_fpr95_oodpos(s_id, s_ood), abs=1e-12)
    # Mann-Whitney with ties counted 1/2
    diff = s_id[:, None] - s_ood[None, :]
    assert got["auroc"] == pytest.approx(np.mean((diff > 0) + 0.5 * (diff == 0)), abs=1e-12)
    # the single-metric functions agree with the combined one
    assert auroc(s_id, s_ood) == got["auroc"]
    assert aupr_in(s_id, s_ood) == got["aupr_in"]
    assert aupr_out(s_id, s_ood) == got["aupr_out"]
    assert fpr95(s_id, s_ood) == got["fpr95"]
    assert fpr95_oodpos(s_id, s_ood) == got["fpr95_oodpos"]


def test_boundary_exactly_95_percent():
    # 20 ID scores: threshold at the 19th highest keeps exactly 95%
    s_id = np.arange(20.0)
    s_ood = np.array([0.5, 1.0, 1.5, 10.0])
    got = ood_metrics(s_id, s_ood)
    assert got["fpr95"] == pytest.approx(3 / 4)  # t = 1: OOD 1.0, 1.5, 10 accepted
    assert got["fpr95"] == pytest.approx(_sklearn(s_id, s_ood)["fpr95"])


def test_perfect_and_all_tied():
    got = ood_metrics([2.0, 3.0], [0.0, 1.0])
    assert got == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "aupr_in_trapz": 1.0, "aupr_out_trapz": 1.0,
                   "fpr95": 0.0, "fpr95_oodpos": 0.0}
    got = ood_metrics([1.0, 1.0], [1.0, 1.0, 1.0])
    assert got["auroc"] == 0.5 and got["fpr95"] == 1.0 and got["fpr95_oodpos"] == 1.0
    assert got["aupr_in"] == pytest.approx(0.4) and got["aupr_out"] == pytest.approx(0.6)
    # one threshold: the trapezoid from (recall 0, precision 1) to (1, 0.4) / (1, 0.6)
    assert got["aupr_in_trapz"] == pytest.approx(0.7) and got["aupr_out_trapz"] == pytest.approx(0.8)


def test_torch_input():
    torch = pytest.importorskip("torch")
    got = ood_metrics(torch.tensor([2.0, 3.0]), torch.tensor([[0.0], [2.5]]))
    assert got["auroc"] == pytest.approx(0.75)


def test_errors_name_the_set_and_count():
    with pytest.raises(ScoringError, match="ID score set is empty"):
        ood_metrics([], [1.0])
    with pytest.raises(ScoringError, match="OOD score set is empty"):
        ood_metrics([1.0], np.array([]))
    with pytest.raises(ScoringError, match="2 of 3 OOD scores are NaN or inf"):
        ood_metrics([1.0], [np.nan, 0.0, np.inf])
    with pytest.raises(ScoringError, match="1 of 2 ID scores"):
        auroc([np.nan, 1.0], [0.0])
    with pytest.raises(ScoringError, match="1-D"):
        ood_metrics(np.ones((2, 2)), [0.0])


@pytest.mark.parametrize("ties", [False, True])
def test_trapezoidal_aupr_equals_sklearn_auc_of_the_pr_curve(ties):
    from sklearn.metrics import auc, precision_recall_curve

    from ncprobe.metrics import aupr_in_trapz, aupr_out_trapz

    rng = np.random.default_rng(7)
    s_id, s_ood = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 200)
    if ties:
        s_id, s_ood = np.round(s_id, 1), np.round(s_ood, 1)
    y = np.r_[np.ones(300), np.zeros(200)]
    s = np.r_[s_id, s_ood]
    p_in, r_in, _ = precision_recall_curve(y, s)
    p_out, r_out, _ = precision_recall_curve(1 - y, -s)
    m = ood_metrics(s_id, s_ood)
    np.testing.assert_allclose(m["aupr_in_trapz"], auc(r_in, p_in), rtol=0, atol=1e-12)
    np.testing.assert_allclose(m["aupr_out_trapz"], auc(r_out, p_out), rtol=0, atol=1e-12)
    assert aupr_in_trapz(s_id, s_ood) == m["aupr_in_trapz"] and aupr_out_trapz(s_id, s_ood) == m["aupr_out_trapz"]
    # the two AUPR definitions are different numbers once scores tie
    if ties:
        assert abs(m["aupr_in_trapz"] - m["aupr_in"]) > 1e-4
