"""OOD detection metrics from scores where higher = more in-distribution.

All five metrics come from one sort of the pooled scores. Ties are handled the same way everywhere:
a threshold t accepts (calls ID) every sample with score >= t, so tied scores are always accepted or
rejected together, and the curves have one point per *distinct* score value (as scikit-learn's
``roc_curve`` / ``precision_recall_curve``). Consequences:

* ``auroc``: area under the ROC with ID positive, trapezoidal over distinct thresholds; equals the
  Mann-Whitney probability P(s_id > s_ood) + 0.5 P(s_id = s_ood) (= sklearn ``roc_auc_score``).
* ``aupr_in``: average precision with ID positive and score s (= sklearn ``average_precision_score``).
* ``aupr_out``: average precision with OOD positive and score -s.
* ``aupr_in_trapz`` / ``aupr_out_trapz``: the trapezoidal area under the same precision-recall curves,
  starting at (recall 0, precision 1) (= sklearn ``auc(recall, precision)`` on
  ``precision_recall_curve``): the AUPR of OpenOOD's and pytorch-ood's tables. With ties the two
  definitions differ by up to a few 1e-3; ``aupr_in``/``aupr_out`` are the average precision.
* ``fpr95`` (ID positive, papers.md): take the highest threshold whose TPR (fraction of ID with score
  >= t) is >= 0.95; report the fraction of OOD with score >= t (accepted as ID). Equals the smallest
  ROC FPR among points with TPR >= 0.95.
* ``fpr95_oodpos`` (OOD positive, OpenOOD / pytorch-ood convention): OOD is detected when score <= t;
  take the lowest t detecting >= 95% of OOD; report the fraction of ID with score <= t (flagged).

"TPR >= 0.95" is the float comparison k/n >= 0.95, as in ``roc_curve``-based code.
"""

from __future__ import annotations

import math

import numpy as np

from .validation import check_scores

__all__ = ["auroc", "aupr_in", "aupr_out", "aupr_in_trapz", "aupr_out_trapz", "fpr95", "fpr95_oodpos", "ood_metrics"]


def _curves(id_scores, ood_scores):
    """Per distinct score value, in DEScending order: (#ID, #OOD) with that value; plus set sizes."""
    s_id = check_scores(id_scores, "ID")
    s_ood = check_scores(ood_scores, "OOD")
    values, inverse = np.unique(np.concatenate([s_id, s_ood]), return_inverse=True)
    n_id, n_ood = s_id.size, s_ood.size
    g = values.size
    id_cnt = np.bincount(inverse[:n_id], minlength=g)[::-1]
    ood_cnt = np.bincount(inverse[n_id:], minlength=g)[::-1]
    return id_cnt, ood_cnt, n_id, n_ood


def _min_count(level: float, n: int) -> int:
    """Smallest k with the float comparison k / n >= level (as ``tpr >= level`` on a roc_curve)."""
    k = min(max(math.ceil(level * n), 0), n)
    while k > 0 and (k - 1) / n >= level:
        k -= 1
    while k < n and k / n < level:
        k += 1
    return k


def _auroc(id_cnt, ood_cnt, n_id, n_ood) -> float:
    tpr = np.concatenate([[0.0], np.cumsum(id_cnt) / n_id])
    fpr = np.concatenate([[0.0], np.cumsum(ood_cnt) / n_ood])
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def _average_precision(pos_cnt, neg_cnt, n_pos) -> float:
    """Average precision sum_k (R_k - R_{k-1}) P_k, thresholds from most to least confident."""
    tp = np.cumsum(pos_cnt)
    fp = np.cumsum(neg_cnt)
    precision = tp / (tp + fp)
    return float(np.sum(pos_cnt / n_pos * precision))


def _trapezoidal_pr_area(pos_cnt, neg_cnt, n_pos) -> float:
    """Trapezoidal area under the precision-recall curve, from (recall 0, precision 1) through one
    point per distinct threshold: ``sklearn.metrics.auc(recall, precision)`` on
    ``precision_recall_curve``, the AUPR that OpenOOD and pytorch-ood report."""
    tp = np.cumsum(pos_cnt)
    precision = np.concatenate([[1.0], tp / (tp + np.cumsum(neg_cnt))])
    recall = np.concatenate([[0.0], tp / n_pos])
    return float(np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2.0))


def _fpr_at(pos_cnt, neg_cnt, n_pos, n_neg, level) -> float:
    tp = np.cumsum(pos_cnt)
    k = _min_count(level, n_pos)
    idx = int(np.searchsorted(tp, k, side="left"))  # first threshold with TP >= k
    return float(np.cumsum(neg_cnt)[idx] / n_neg)


def auroc(id_scores, ood_scores) -> float:
    """Area under the ROC curve, ID positive (ties count 1/2)."""
    return _auroc(*_curves(id_scores, ood_scores))


def aupr_in(id_scores, ood_scores) -> float:
    """Average precision with ID as the positive class."""
    id_cnt, ood_cnt, n_id, _ = _curves(id_scores, ood_scores)
    return _average_precision(id_cnt, ood_cnt, n_id)


def aupr_out(id_scores, ood_scores) -> float:
    """Average precision with OOD as the positive class (score negated)."""
    id_cnt, ood_cnt, _, n_ood = _curves(id_scores, ood_scores)
    return _average_precision(ood_cnt[::-1], id_cnt[::-1], n_ood)


def aupr_in_trapz(id_scores, ood_scores) -> float:
    """Trapezoidal area under the precision-recall curve, ID positive (OpenOOD's AUPR-In)."""
    id_cnt, ood_cnt, n_id, _ = _curves(id_scores, ood_scores)
    return _trapezoidal_pr_area(id_cnt, ood_cnt, n_id)


def aupr_out_trapz(id_scores, ood_scores) -> float:
    """Trapezoidal area under the precision-recall curve, OOD positive (OpenOOD's AUPR-Out)."""
    id_cnt, ood_cnt, _, n_ood = _curves(id_scores, ood_scores)
    return _trapezoidal_pr_area(ood_cnt[::-1], id_cnt[::-1], n_ood)


def fpr95(id_scores, ood_scores, level: float = 0.95) -> float:
    """Fraction of OOD accepted at the threshold keeping ``level`` of ID (ID positive)."""
    id_cnt, ood_cnt, n_id, n_ood = _curves(id_scores, ood_scores)
    return _fpr_at(id_cnt, ood_cnt, n_id, n_ood, level)


def fpr95_oodpos(id_scores, ood_scores, level: float = 0.95) -> float:
    """Fraction of ID flagged at the threshold detecting ``level`` of OOD (OOD positive, OpenOOD)."""
    id_cnt, ood_cnt, n_id, n_ood = _curves(id_scores, ood_scores)
    return _fpr_at(ood_cnt[::-1], id_cnt[::-1], n_ood, n_id, level)


def ood_metrics(id_scores, ood_scores) -> dict:
    """auroc, aupr_in, aupr_out (average precision), aupr_in_trapz, aupr_out_trapz (trapezoidal),
    fpr95 (ID positive) and fpr95_oodpos (OOD positive), from one sort."""
    id_cnt, ood_cnt, n_id, n_ood = _curves(id_scores, ood_scores)
    return {
        "auroc": _auroc(id_cnt, ood_cnt, n_id, n_ood),
        "aupr_in": _average_precision(id_cnt, ood_cnt, n_id),
        "aupr_out": _average_precision(ood_cnt[::-1], id_cnt[::-1], n_ood),
        "aupr_in_trapz": _trapezoidal_pr_area(id_cnt, ood_cnt, n_id),
        "aupr_out_trapz": _trapezoidal_pr_area(ood_cnt[::-1], id_cnt[::-1], n_ood),
        "fpr95": _fpr_at(id_cnt, ood_cnt, n_id, n_ood, 0.95),
        "fpr95_oodpos": _fpr_at(ood_cnt[::-1], id_cnt[::-1], n_ood, n_id, 0.95),
    }
