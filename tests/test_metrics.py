"""tl.metrics against scipy and against values small enough to check by hand (to 1e-12), including
the degenerate inputs that must give 0.0 with one warning of ours, never NaN and never scipy's warning."""
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from tl.metrics import accuracy, acc_and_f1, compute_metrics, f1, headline_score, matthews, pearson, spearman
from tl.tasks import get_task


def test_hand_computed_values():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    # tp = 3, fp = 1, fn = 1, tn = 3
    pred, gold = [1, 1, 1, 0, 0, 0, 1, 0], [1, 1, 0, 0, 0, 1, 1, 0]
    assert f1(pred, gold) == pytest.approx(6 / 8, abs=1e-12)
    assert matthews(pred, gold) == pytest.approx((3 * 3 - 1 * 1) / math.sqrt(4 * 4 * 4 * 4), abs=1e-12)
    assert acc_and_f1(pred, gold) == pytest.approx((6 / 8 + 6 / 8) / 2, abs=1e-12)
    # three classes: c = 2, s = 4, t = (1, 2, 1), p = (2, 1, 1) -> (8 - 5) / sqrt((16 - 6)(16 - 6))
    assert matthews([0, 1, 2, 0], [0, 1, 1, 2]) == pytest.approx(0.3, abs=1e-12)
    # x centred (-1, 0, 1), y centred (-4/3, -1/3, 5/3): r = 3 / sqrt(2 * 14/3)
    assert pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(3 / math.sqrt(28 / 3), abs=1e-12)
    # ranks with a tie: (1, 2.5, 2.5, 4) vs (1, 3, 2, 4) -> 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5), abs=1e-12)
    # a tie of three: ranks (2, 4, 4, 1, 4) vs (1, 2, 3, 4, 5), centred (-1, 1, 1, -2, 1) . (-2, -1, 0, 1, 2) = 1
    assert spearman([10, 20, 20, 5, 20], [1, 2, 3, 4, 5]) == pytest.approx(1 / math.sqrt(8 * 10), abs=1e-12)


def test_correlations_match_scipy():
    """The very numbers of scipy.stats (GLUE's reference), as plain floats, with no warning."""
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 1000):
        x = rng.normal(size=n)
        y = 0.5 * x + rng.normal(size=n)
        xi, yi = rng.integers(0, 5, size=n), rng.integers(0, 5, size=n)  # many ties
        if np.ptp(xi) == 0 or np.ptp(yi) == 0:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for a, b in ((x, y), (xi, yi), (x.astype(np.float32), y.astype(np.float32))):
                r, rho = pearson(a, b), spearman(a, b)
                assert type(r) is float and type(rho) is float
                assert r == stats.pearsonr(a.astype(np.float64), b.astype(np.float64))[0]
                assert rho == stats.spearmanr(a, b)[0]


def test_nearly_constant_input_gives_scipys_number_without_its_warning():
    """scipy warns NearConstantInputWarning here and still computes r; tl reports that r, silently."""
    x, y = np.array([3.0, 3.0 + 1e-13, 3.0]), np.array([1.0, 2.0, 3.0])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        expected = stats.pearsonr(x, y)[0]
    assert [w.category for w in record] == [stats.NearConstantInputWarning]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pearson(x, y) == expected and -1.0 <= expected <= 1.0


def test_binary_matthews_and_f1_match_the_confusion_matrix_formulas():
    rng = np.random.default_rng(1)
    pred, gold = rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    tp, tn = np.sum((pred == 1) & (gold == 1)), np.sum((pred == 0) & (gold == 0))
    fp, fn = np.sum((pred == 1) & (gold == 0)), np.sum((pred == 0) & (gold == 1))
    phi = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert abs(matthews(pred, gold) - phi) < 1e-12
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert abs(f1(pred, gold) - 2 * precision * recall / (precision + recall)) < 1e-12


@pytest.mark.parametrize("metric, pred, gold, name, why", [
    (pearson, [1.0, 1.0, 1.0], [0.0, 1.0, 2.0], "correlation", "constant predictions or constant labels"),
    (pearson, [0.0, 1.0, 2.0], [0.1, 0.1, 0.1], "correlation", "constant predictions or constant labels"),
    (spearman, [0.0, 1.0, 2.0], [3.0, 3.0, 3.0], "correlation", "constant predictions or constant labels"),
    (spearman, [2, 2], [0, 1], "correlation", "constant predictions or constant labels"),
    # a diverged regression head
    (pearson, [float("nan"), 1.0, 2.0], [0.0, 1.0, 2.0], "correlation", "fewer than 2 examples or non-finite values"),
    (spearman, [float("nan"), 1.0, 2.0], [0.0, 1.0, 2.0], "correlation", "non-finite values"),
    (spearman, [0.0, 1.0, 2.0], [0.0, float("inf"), 2.0], "correlation", "non-finite values"),
    (pearson, [0.0, 1.0, 2.0], [0.0, float("-inf"), 2.0], "correlation", "fewer than 2 examples or non-finite values"),
    (pearson, [1.0], [2.0], "correlation", "fewer than 2 examples or non-finite values"),
    (pearson, [], [], "correlation", "fewer than 2 examples or non-finite values"),
    (spearman, [1.0], [2.0], "correlation", "fewer than 2 examples or non-finite values"),
    (spearman, [], [], "correlation", "fewer than 2 examples or non-finite values"),
    (spearman, [float("nan")], [2.0], "correlation", "non-finite values"),
    (matthews, [1, 1, 1, 1], [0, 1, 0, 1], "Matthews correlation", "constant predictions or constant labels"),
    (matthews, [0, 1, 0, 1], [1, 1, 1, 1], "Matthews correlation", "constant predictions or constant labels"),
    (f1, [0, 0, 0], [0, 0, 0], "F1", "no positive label in predictions or gold"),  # no positive anywhere
    (accuracy, [], [], "accuracy", "no examples"),
])
def test_degenerate_inputs_give_zero_with_a_warning(metric, pred, gold, name, why):
    """0.0 and exactly one warning, ours, naming the metric and the reason: none of scipy's
    (ConstantInputWarning, a NaN p-value's RuntimeWarning) comes through."""
    message = f"{name} is undefined ({why}); reporting 0.0"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        value = metric(np.array(pred), np.array(gold))
    assert [(w.category, str(w.message)) for w in record] == [(RuntimeWarning, message)]
    assert type(value) is float and value == 0.0


def test_degenerate_warning_points_at_the_caller():
    """stacklevel: the warning names the line that called the metric, not tl/metrics.py."""
    for metric, pred, gold in ((f1, [0, 0], [0, 0]), (accuracy, [], []), (pearson, [1.0], [2.0]),
                               (pearson, [1.0, 1.0], [1.0, 2.0]), (spearman, [float("nan")], [2.0]),
                               (spearman, [1.0], [2.0]), (spearman, [1.0, 1.0], [1.0, 2.0])):
        with pytest.warns(RuntimeWarning) as record:
            metric(np.array(pred), np.array(gold))
        assert [w.filename for w in record] == [__file__]


def test_correlation_is_clipped_to_its_range():
    """x centred and normalised, x . x rounds to 1.0000000000000002 for this x, and so does the
    correlation of its ranks (1, 2.5, 2.5): reported as exactly 1 (and -1 for -x), never outside [-1, 1]."""
    x = np.array([-1.3, 0.4, 0.4])
    assert pearson(x, x) == 1.0 and pearson(x, -x) == -1.0
    assert spearman(x, x) == 1.0 and spearman(x, -x) == -1.0


def test_f1_without_true_positives_is_a_plain_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert f1([1, 1, 0], [0, 0, 1]) == 0.0
        assert f1([1, 0], [0, 1]) == 0.0  # fp = fn = 1: 2 tp + fp + fn = 2, no warning


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same length"):
        accuracy([1, 0], [1])


def test_compute_metrics_and_headline_per_task():
    gold = np.array([1, 1, 0, 0, 0, 1, 1, 0])
    logits = np.zeros((8, 2))
    logits[np.arange(8), [1, 1, 1, 0, 0, 0, 1, 0]] = 1.0  # (N, C) logits are reduced by argmax
    mrpc = compute_metrics(get_task("mrpc"), logits, gold)
    assert set(mrpc) == {"accuracy", "f1", "acc_and_f1"}
    assert headline_score(get_task("MRPC"), mrpc) == pytest.approx(100 * (0.75 + 0.75) / 2, abs=1e-10)
    cola = compute_metrics(get_task("cola"), logits.argmax(1), gold)
    assert headline_score(get_task("CoLA"), cola) == pytest.approx(50.0, abs=1e-10)
    stsb = compute_metrics(get_task("sts-b"), np.array([[0.1], [0.2], [0.4]]), np.array([1.0, 2.0, 3.0]))
    assert set(stsb) == {"pearson", "spearman"} and headline_score(get_task("stsb"), stsb) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="headline metric 'accuracy' missing"):
        headline_score(get_task("rte"), {"f1": 1.0})


@pytest.mark.parametrize("task", ["MRPC", "QQP"])
def test_acc_and_f1_when_accuracy_and_f1_differ(task):
    """The MRPC/QQP headline is the mean of accuracy and F1 of class 1; a case where the two differ,
    so that a score reporting either alone, or F1 of class 0, is caught. tp = 2, fp = 2, fn = 1,
    tn = 5: accuracy 7/10, F1 2*2 / (2*2 + 2 + 1) = 4/7 (class 0's F1 would be 10/13)."""
    pred = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    gold = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 0])
    assert accuracy(pred, gold) == pytest.approx(7 / 10, abs=1e-12)
    assert f1(pred, gold) == pytest.approx(4 / 7, abs=1e-12)
    assert acc_and_f1(pred, gold) == pytest.approx((7 / 10 + 4 / 7) / 2, abs=1e-12)  # 89/140
    metrics = compute_metrics(get_task(task), pred, gold)
    assert metrics == pytest.approx({"accuracy": 7 / 10, "f1": 4 / 7, "acc_and_f1": 89 / 140}, abs=1e-12)
    assert headline_score(get_task(task), metrics) == pytest.approx(100 * 89 / 140, abs=1e-10)
    # all wrong on the positives: F1 is 0 while accuracy is not, and the headline is half the accuracy
    assert acc_and_f1([0, 0, 0, 1], [1, 0, 0, 0]) == pytest.approx((2 / 4 + 0) / 2, abs=1e-12)
