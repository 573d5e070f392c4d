"""GLUE metrics as pure numpy functions, and a task's headline score.

Follows the GLUE benchmark's definitions (Wang et al., ICLR 2019, Table 1) as computed by the
reference `glue_compute_metrics` of the transformers examples the paper's code ran:
accuracy; F1 of the positive class (label 1: "equivalent" for MRPC, "duplicate" for QQP);
Matthews correlation (CoLA); Pearson and Spearman correlation (STS-B); (accuracy + F1) / 2 for
MRPC and QQP (the GLUE leaderboard's combined score). The headline metric of each task is the one
of docs/PROTOCOL.md ("Scores (x100) per task"), named by `TaskSpec.headline`.

Every function takes two 1-D arrays of equal length N: `pred` (N,) and `gold` (N,). A degenerate
input (empty, constant, non-finite) returns 0.0 with a warning, never NaN and never a crash, so a
run that predicts one class all epoch still gets a score and a visible warning. `majority_score` is
the baseline every run record keeps: the score of predicting the dev set's most frequent label.
Imports no tl file.
"""
import warnings

import numpy as np


def _pair(pred, gold) -> tuple:
    pred, gold = np.asarray(pred), np.asarray(gold)
    if pred.shape != gold.shape or pred.ndim != 1:
        raise ValueError(f"predictions {pred.shape} and labels {gold.shape} must be 1-D arrays of the same length")
    return pred, gold


def _degenerate(metric: str, why: str) -> float:
    warnings.warn(f"{metric} is undefined ({why}); reporting 0.0", RuntimeWarning, stacklevel=3)
    return 0.0


def accuracy(pred, gold) -> float:
    """Fraction of exact matches."""
    pred, gold = _pair(pred, gold)
    if pred.size == 0:
        return _degenerate("accuracy", "no examples")
    return float(np.mean(pred == gold))


def f1(pred, gold) -> float:
    """F1 of the positive class (label 1) = 2 TP / (2 TP + FP + FN), the harmonic mean of precision
    and recall written so that it is defined whenever either is."""
    pred, gold = _pair(pred, gold)
    tp = int(np.sum((pred == 1) & (gold == 1)))
    fp = int(np.sum((pred == 1) & (gold != 1)))
    fn = int(np.sum((pred != 1) & (gold == 1)))
    if 2 * tp + fp + fn == 0:
        return _degenerate("F1", "no positive label in predictions or gold")
    return 2 * tp / (2 * tp + fp + fn)


def matthews(pred, gold) -> float:
    """Matthews correlation, multi-class form (Gorodkin 2004; sklearn's `matthews_corrcoef`):
    (c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)), with c correct, s total, t and p the per-class
    counts of gold and predicted labels. Equals the binary phi coefficient for two classes."""
    pred, gold = _pair(pred, gold)
    classes = np.union1d(pred, gold)
    t = np.array([np.sum(gold == k) for k in classes], dtype=np.float64)
    p = np.array([np.sum(pred == k) for k in classes], dtype=np.float64)
    c, s = float(np.sum(pred == gold)), float(pred.size)
    denominator = (s * s - p @ p) * (s * s - t @ t)
    if denominator == 0:
        return _degenerate("Matthews correlation", "constant predictions or constant labels")
    return float((c * s - t @ p) / np.sqrt(denominator))


def pearson(pred, gold) -> float:
    """Pearson's r of the two samples (float64, centred first as scipy.stats.pearsonr does)."""
    pred, gold = _pair(pred, gold)
    x, y = pred.astype(np.float64), gold.astype(np.float64)
    if x.size < 2 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return _degenerate("correlation", "fewer than 2 examples or non-finite values")
    x, y = x - x.mean(), y - y.mean()
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if nx == 0 or ny == 0:
        return _degenerate("correlation", "constant predictions or constant labels")
    return float(np.clip(np.dot(x / nx, y / ny), -1.0, 1.0))


def rank_average(x) -> np.ndarray:
    """Ranks 1..N of `x` (N,), ties given the mean of their ranks (scipy.stats.rankdata 'average')."""
    x = np.asarray(x)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # a new group of equal values starts where the sorted value changes
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], x.size]  # exclusive
    group_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def spearman(pred, gold) -> float:
    """Spearman's rho = Pearson's r of the average ranks."""
    pred, gold = _pair(pred, gold)
    if not (np.all(np.isfinite(pred.astype(np.float64))) and np.all(np.isfinite(gold.astype(np.float64)))):
        return _degenerate("correlation", "non-finite values")
    return pearson(rank_average(pred), rank_average(gold))


def acc_and_f1(pred, gold) -> float:
    """(accuracy + F1) / 2, the GLUE leaderboard score of MRPC and QQP."""
    return (accuracy(pred, gold) + f1(pred, gold)) / 2


METRICS = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews": matthews,
    "pearson": pearson,
    "spearman": spearman,
    "acc_and_f1": acc_and_f1,
}
# the interval each metric lies in (a headline score: 100 times it); correlations can be negative
BOUNDS = {"accuracy": (0.0, 1.0), "f1": (0.0, 1.0), "matthews": (-1.0, 1.0), "pearson": (-1.0, 1.0),
          "spearman": (-1.0, 1.0), "acc_and_f1": (0.0, 1.0)}


def compute_metrics(spec, predictions, labels) -> dict:
    """All of `spec.metrics` for one split: `predictions` are class ids (N,) or logits (N, C) for a
    classification task, floats (N,) for a regression task; `labels` (N,) as read by tasks.read_split."""
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
    """The headline score x100 of predicting the most frequent label of `labels` (N,) for every example
    (the smallest label id on a tie): what a model that learned nothing scores. For regression, a
    constant prediction has no correlation with the labels: 0.0. Matthews is 0.0 for any constant."""
    labels = np.asarray(labels)
    if spec.is_regression or labels.size == 0:
        return 0.0
    values, counts = np.unique(labels, return_counts=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a constant's Matthews correlation: 0.0, as intended
        return headline_score(spec, compute_metrics(spec, np.full(labels.shape, values[np.argmax(counts)]), labels))
