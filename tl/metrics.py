"""GLUE metrics as the paper's code computed them (transformers' `glue_compute_metrics`, scipy.stats' correlations;
Wang et al. 2019) and a task's headline score. Degenerate inputs give 0.0 with a warning, never NaN. Imports no tl file.
"""
import warnings

import numpy as np
from scipy import stats


def _pair(pred, gold) -> tuple:
    pred, gold = np.asarray(pred), np.asarray(gold)
    if pred.shape != gold.shape or pred.ndim != 1:
        raise ValueError(f"predictions {pred.shape} and labels {gold.shape} must be 1-D arrays of the same length")
    return pred, gold


def _degenerate(metric: str, why: str, stacklevel: int = 3) -> float:
    warnings.warn(f"{metric} is undefined ({why}); reporting 0.0", RuntimeWarning, stacklevel=stacklevel)
    return 0.0


def accuracy(pred, gold) -> float:
    """Fraction of exact matches."""
    pred, gold = _pair(pred, gold)
    return float(np.mean(pred == gold)) if pred.size else _degenerate("accuracy", "no examples")


def f1(pred, gold) -> float:
    """F1 of label 1 (MRPC's "equivalent", QQP's "duplicate") = 2 TP / (2 TP + FP + FN)."""
    p, g = (a == 1 for a in _pair(pred, gold))
    tp, fp, fn = int(np.sum(p & g)), int(np.sum(p & ~g)), int(np.sum(~p & g))
    if 2 * tp + fp + fn == 0:
        return _degenerate("F1", "no positive label in predictions or gold")
    return 2 * tp / (2 * tp + fp + fn)


def matthews(pred, gold) -> float:
    """Multi-class Matthews correlation (Gorodkin 2004; sklearn's `matthews_corrcoef`): (c s - t.p) /
    sqrt((s^2 - p.p)(s^2 - t.t)), c correct, s total, t and p the per-class gold and predicted counts."""
    pred, gold = _pair(pred, gold)
    classes = np.union1d(pred, gold)
    t, p = (np.array([np.sum(labels == k) for k in classes], dtype=np.float64) for labels in (gold, pred))
    c, s = float(np.sum(pred == gold)), float(pred.size)
    denominator = (s * s - p @ p) * (s * s - t @ t)
    if denominator == 0:
        return _degenerate("Matthews correlation", "constant predictions or constant labels")
    return float((c * s - t @ p) / np.sqrt(denominator))


def _correlation(correlate, pred, gold, non_finite: str) -> float:
    """`correlate` (scipy.stats.pearsonr or spearmanr) in float64; 0.0 and our warning where scipy's would be NaN."""
    x, y = (a.astype(np.float64) for a in _pair(pred, gold))
    if not np.isfinite(np.r_[x, y]).all():
        return _degenerate("correlation", non_finite, stacklevel=4)
    if x.size < 2:
        return _degenerate("correlation", "fewer than 2 examples or non-finite values", stacklevel=4)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return _degenerate("correlation", "constant predictions or constant labels", stacklevel=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.NearConstantInputWarning)  # scipy's number stands, as GLUE's does
        return float(correlate(x, y).statistic)


def pearson(pred, gold) -> float:
    """Pearson's r (scipy.stats.pearsonr, clipped to [-1, 1])."""
    return _correlation(stats.pearsonr, pred, gold, "fewer than 2 examples or non-finite values")


def spearman(pred, gold) -> float:
    """Spearman's rho (scipy.stats.spearmanr: Pearson's r of the ranks, tied values given their mean rank)."""
    return _correlation(stats.spearmanr, pred, gold, "non-finite values")


def acc_and_f1(pred, gold) -> float:
    """(accuracy + F1) / 2, the GLUE leaderboard score of MRPC and QQP."""
    return (accuracy(pred, gold) + f1(pred, gold)) / 2


METRICS = {m.__name__: m for m in (accuracy, f1, matthews, pearson, spearman, acc_and_f1)}
# the interval each metric lies in (a headline score: 100 times it); correlations can be negative
BOUNDS = {"accuracy": (0.0, 1.0), "f1": (0.0, 1.0), "matthews": (-1.0, 1.0), "pearson": (-1.0, 1.0),
          "spearman": (-1.0, 1.0), "acc_and_f1": (0.0, 1.0)}


def compute_metrics(spec, predictions, labels) -> dict:
    """All of `spec.metrics` for one split, from class ids (N,) or logits (N, C), or regression floats (N,)."""
    predictions = np.asarray(predictions)
    if spec.is_regression:
        predictions = predictions.reshape(-1).astype(np.float64)
    elif predictions.ndim == 2:
        predictions = predictions.argmax(axis=1)  # (N, C) logits -> (N,) class ids
    return {name: METRICS[name](predictions, np.asarray(labels)) for name in spec.metrics}


def headline_score(spec, metrics: dict) -> float:
    """The task's headline metric x100: the number in the paper's matrices and tables."""
    if spec.headline not in metrics:
        raise ValueError(f"{spec.name}: headline metric {spec.headline!r} missing from {sorted(metrics)}")
    return 100.0 * metrics[spec.headline]


def majority_score(spec, labels) -> float:
    """Headline score x100 of always predicting the most frequent label (smallest on a tie); 0.0 for regression."""
    if spec.is_regression or np.size(labels) == 0:
        return 0.0
    values, counts = np.unique(labels, return_counts=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a constant's Matthews correlation: 0.0, as intended
        return headline_score(spec, compute_metrics(spec, np.full(len(labels), values[np.argmax(counts)]), labels))
