"""tl.stats, tl.study.scores, tl.study.report, tools/plots.py and tools/stats.py on hand-made scores small enough to
check by hand: every expected value below is computed in the test from explicit arithmetic (or from
scipy as an independent oracle), never by calling the code under test."""
import csv
import importlib.util
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.special
import scipy.stats

from tl import stats
from tl.study.report import (StatsSettings, analyse, average_pairwise, heuristic_accuracy, render_markdown,
                             size_heuristic_picks_mtl, table1, table2)
from tl.study.scores import read_run_records, read_scores_csv, task_sizes
from tl.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("tools_stats", ROOT / "tools" / "stats.py")
stats_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stats_tool)  # puts tools/ on sys.path
from plots import NO_TEST, NOT_SIGNIFICANT, matrix_state  # noqa: E402  (tools/plots.py)

# (target, support) -> (MTL seed scores, STILTs seed scores); names written as a user might
CELLS = {
    ("rte", "mrpc"): ([70, 71, 72], [60, 61, 62]),
    ("RTE", "cola"): ([65, 67, 69], [66, 66, 67]),
    ("MRPC", "rte"): ([80, 81, 82], [85, 86, 87]),
    ("mrpc", "CoLA"): ([84, 85, 86], [80, 81, 82]),
    ("cola", "rte"): ([50, 52, 54], [56]),  # one STILTs seed: no test possible
    ("cola", "mrpc"): ([55, 56, 57], [50, 51, 52]),
}
MTL_ALL = {"rte": {"mtl_all": [60, 62], "mtl_all:uniform": [58, 57], "mtl_all:size": [59, 61]},
           "mrpc": {"mtl_all:dynamic": [80, 84]}}
SIZES = {"RTE": 2490, "MRPC": 3668, "CoLA": 8551}  # PROTOCOL.md's official train sizes


def write_table(path: Path, extra_rows=()) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target", "support", "method", "seed", "score"])
        for (t, s), (mtl, stilts) in CELLS.items():
            w.writerows([t, s, "mtl", i, x] for i, x in enumerate(mtl))
            w.writerows([t, s, "STILTs", i, x] for i, x in enumerate(stilts))
        for t, methods in MTL_ALL.items():
            for m, xs in methods.items():
                w.writerows([t, "", m, i, x] for i, x in enumerate(xs))
        w.writerow(["rte", "", "single", 1, 55.5])
        w.writerows(extra_rows)
    return path


@pytest.fixture
def table(tmp_path) -> Path:
    return write_table(tmp_path / "scores.csv")


def by_cell(analysis) -> dict:
    return {(c["target"], c["support"]): c for c in analysis["cells"]}


def run(table_path, **settings) -> dict:
    rows = read_scores_csv(table_path)
    return analyse(rows, StatsSettings(**settings), task_sizes(rows))


def test_registry_sizes_are_the_papers():
    assert {t: get_task(t).train_size for t in SIZES} == SIZES


# ---------------------------------------------------------------- the t-test by hand
def test_t_by_hand_and_ddof():
    # RTE <- MRPC: means 71 and 61, both sample variances ((-1)^2 + 0 + 1^2) / (3 - 1) = 1
    n, mean, std = stats.describe([70, 71, 72])
    assert (n, mean, std) == (3, 71.0, 1.0)
    pooled = ((3 - 1) * 1.0 + (3 - 1) * 1.0) / (3 + 3 - 2)
    t_hand = (71 - 61) / math.sqrt(pooled * (1 / 3 + 1 / 3))
    got = stats.t_test([70, 71, 72], [60, 61, 62])
    assert got.t == pytest.approx(t_hand, abs=1e-12) and got.df == 4
    assert got.p == pytest.approx(2 * scipy.stats.t.sf(t_hand, 4), rel=1e-12)
    assert stats.t_test([1.0, 2.0], [3.0]) is None


@pytest.mark.parametrize("welch", [False, True])
def test_t_test_unequal_sizes_by_hand(welch):
    # a = {1, 2, 3, 6}: mean 3, var (4 + 1 + 0 + 9) / 3 = 14/3; b = {0, 2}: mean 1, var 2
    va, vb, n, m = 14 / 3, 2.0, 4, 2
    if welch:
        se2 = va / n + vb / m
        df = se2**2 / ((va / n) ** 2 / (n - 1) + (vb / m) ** 2 / (m - 1))
    else:
        df = n + m - 2
        se2 = ((n - 1) * va + (m - 1) * vb) / df * (1 / n + 1 / m)
    t = (3 - 1) / math.sqrt(se2)
    for alt, p in (("two-sided", 2 * scipy.stats.t.sf(t, df)), ("greater", scipy.stats.t.sf(t, df)),
                   ("less", scipy.stats.t.cdf(t, df))):
        got = stats.t_test([1.0, 2, 3, 6], [0.0, 2], welch=welch, alternative=alt)
        assert got.t == pytest.approx(t, rel=1e-12) and got.df == pytest.approx(df, rel=1e-12)
        assert got.p == pytest.approx(p, rel=1e-10)
        if not welch:  # the default is the paper's Student test
            assert stats.t_test([1.0, 2, 3, 6], [0.0, 2], alternative=alt) == got
    with pytest.raises(ValueError, match="^alternative must be one of two-sided, greater, less, got 'bigger'$"):
        stats.t_test([1.0, 2], [3.0, 4], alternative="bigger")


def test_t_test_zero_variance_is_quiet(recwarn):
    assert stats.t_test([1.0, 1, 1], [2.0, 2, 2]).t == -math.inf
    assert math.isnan(stats.t_test([1.0, 1], [1.0, 1]).t)
    assert not recwarn.list  # scipy's "nearly identical data" warning is silenced


# ---------------------------------------------------------------- the paper's analysis by hand
def test_cells_significance_and_heuristic(table):
    a = run(table, alpha=0.1)
    cells = by_cell(a)
    assert set(cells) == {("RTE", "MRPC"), ("RTE", "CoLA"), ("MRPC", "RTE"), ("MRPC", "CoLA"),
                          ("CoLA", "RTE"), ("CoLA", "MRPC")}
    # rows and columns in the paper's order: largest training set first
    assert a["targets"] == ["CoLA", "MRPC", "RTE"] and a["supports"] == ["CoLA", "MRPC", "RTE"]
    for (t, s), (mtl, stilts) in CELLS.items():
        c = cells[(get_task(t).name, get_task(s).name)]
        mean_m, mean_s = sum(mtl) / len(mtl), sum(stilts) / len(stilts)
        assert c["mean_mtl"] == pytest.approx(mean_m, abs=1e-12)
        assert c["diff"] == pytest.approx(mean_m - mean_s, abs=1e-12)
        assert c["std_mtl"] == pytest.approx(math.sqrt(sum((x - mean_m) ** 2 for x in mtl) / (len(mtl) - 1)), abs=1e-12)
        assert (c["n_mtl"], c["n_stilts"]) == (len(mtl), len(stilts))
        # heuristic: MTL when the target is smaller than the support
        assert c["predicted"] == ("mtl" if SIZES[c["target"]] < SIZES[c["support"]] else "stilts")
        if len(stilts) < 2:
            assert c["t"] is None and c["p"] is None and not c["significant"] and c["correct"] is None
            assert "no test possible" in c["note"]
            continue
        ref = scipy.stats.ttest_ind(mtl, stilts)
        assert abs(c["t"] - ref.statistic) <= 1e-12 and abs(c["p"] - ref.pvalue) <= 1e-12
        assert c["significant"] == (ref.pvalue < 0.1)
        if c["significant"]:
            assert c["correct"] == ((mean_m > mean_s) == (c["predicted"] == "mtl"))
        else:
            assert c["correct"] is None
    # by hand: significant = every tested cell but RTE <- CoLA (t = 0.667 / sqrt(pooled 13/6 * 2/3) ~ 0.55);
    # the heuristic misses only CoLA <- MRPC (CoLA is larger, yet MTL wins by 5)
    assert [k for k, c in cells.items() if c["significant"]] == [("CoLA", "MRPC"), ("MRPC", "CoLA"),
                                                                  ("MRPC", "RTE"), ("RTE", "MRPC")]
    assert [k for k, c in cells.items() if c["correct"] is False] == [("CoLA", "MRPC")]
    assert a["summary"] == dict(n_cells=6, n_tested=5, n_significant=4, n_correct=3, accuracy=3 / 4,
                                n_mtl_better=3, n_stilts_better=1)


def test_tables_by_hand(table):
    a = run(table)
    t1 = {r["target"]: r for r in a["tables"]["table1"]["rows"]}
    assert a["tables"]["table1"]["columns"] == ["target", "MTL", "STILTs", "Average pairwise", "MTL-ALL (size)"]
    assert t1["RTE"]["MTL"] == pytest.approx((71 + 67) / 2)
    assert t1["RTE"]["STILTs"] == pytest.approx((61 + (66 + 66 + 67) / 3) / 2)
    # average pairwise: per support the better of the two cell means, then their mean
    assert t1["RTE"]["Average pairwise"] == pytest.approx((max(71, 61) + max(67, (66 + 66 + 67) / 3)) / 2)
    assert t1["MRPC"]["Average pairwise"] == pytest.approx((max(81, 86) + max(85, 81)) / 2)
    assert t1["CoLA"]["Average pairwise"] == pytest.approx((max(52, 56) + max(56, 51)) / 2)
    # Table 1's MTL-ALL is the size-sampled run (compare_method_matrices.py), not dynamic (60, 62)
    assert t1["RTE"]["MTL-ALL (size)"] == pytest.approx((59 + 61) / 2)
    assert t1["MRPC"]["MTL-ALL (size)"] is None and t1["CoLA"]["MTL-ALL (size)"] is None
    assert t1["CoLA"]["STILTs"] == pytest.approx((56 + 51) / 2)
    assert t1["Average"]["MTL"] == pytest.approx(((71 + 67) / 2 + (81 + 85) / 2 + (52 + 56) / 2) / 3)
    assert t1["Average"]["MTL-ALL (size)"] == pytest.approx(60)
    # the Average row's columns cover different targets: said under the table
    assert "MTL-ALL (size) 1 of 3" in a["tables"]["table1"]["note"] and "MTL 3 of 3" in a["tables"]["table1"]["note"]

    t2 = {r["target"]: r for r in a["tables"]["table2"]["rows"]}
    assert a["tables"]["table2"]["columns"] == ["target", "MTL-ALL (uniform)", "MTL-ALL (size)", "MTL-ALL (dynamic)",
                                                "Ave. S.H.", "Pairwise Oracle"]
    assert t2["RTE"]["MTL-ALL (uniform)"] == pytest.approx((58 + 57) / 2)
    assert t2["RTE"]["MTL-ALL (size)"] == pytest.approx((59 + 61) / 2)
    assert t2["MRPC"]["MTL-ALL (dynamic)"] == pytest.approx((80 + 84) / 2)  # mtl_all:dynamic is plain mtl_all
    # Ave. S.H.: RTE is the smallest, so MTL for both supports; CoLA the largest, so STILTs for both;
    # MRPC: STILTs with RTE (86), MTL with CoLA (85)
    assert t2["RTE"]["Ave. S.H."] == pytest.approx((71 + 67) / 2)
    assert t2["MRPC"]["Ave. S.H."] == pytest.approx((86 + 85) / 2)
    assert t2["CoLA"]["Ave. S.H."] == pytest.approx((56 + 51) / 2)
    # Pairwise Oracle: the best of the four (support, method) means
    assert t2["RTE"]["Pairwise Oracle"] == pytest.approx(max(71, 61, 67, (66 + 66 + 67) / 3))
    assert t2["MRPC"]["Pairwise Oracle"] == pytest.approx(max(81, 86, 85, 81))
    assert t2["CoLA"]["Pairwise Oracle"] == pytest.approx(max(52, 56, 56, 51))
    assert a["tables"]["singles"] == [dict(target="RTE", n=1, mean=55.5, std=None)]


def test_adjusted_pvalues_small_example():
    p = np.array([0.01, 0.04, 0.03, 0.20])
    # Holm: sorted 0.01, 0.03, 0.04, 0.20 times 4, 3, 2, 1, then a running max
    holm_sorted = [4 * 0.01, max(4 * 0.01, 3 * 0.03), max(4 * 0.01, 3 * 0.03, 2 * 0.04), 0.20]
    back = [0, 2, 1, 3]  # p's own order: 0.01 is 1st smallest, 0.04 3rd, 0.03 2nd, 0.20 4th
    np.testing.assert_allclose(stats.adjust_pvalues(p, "holm"), [holm_sorted[i] for i in back])
    # BH: sorted times 4/1, 4/2, 4/3, 4/4, then a running min from the largest
    bh_sorted = [min(4 * 0.01, 2 * 0.03, 4 / 3 * 0.04, 0.2), min(2 * 0.03, 4 / 3 * 0.04, 0.2),
                 min(4 / 3 * 0.04, 0.2), 0.2]
    np.testing.assert_allclose(stats.adjust_pvalues(p, "bh"), [bh_sorted[i] for i in back])
    np.testing.assert_allclose(stats.adjust_pvalues(p, "bh"), scipy.stats.false_discovery_control(p))
    np.testing.assert_array_equal(stats.adjust_pvalues(p, "none"), p)
    with_nan = stats.adjust_pvalues(np.array([0.01, np.nan, 0.03]), "holm")
    assert np.isnan(with_nan[1]) and with_nan[0] == pytest.approx(2 * 0.01) and with_nan[2] == pytest.approx(0.03)


@pytest.mark.parametrize("correction", ["holm", "bh"])
def test_corrections_over_the_matrix(table, correction):
    a = run(table, alpha=0.01, correction=correction)
    tested = sorted((c["p"], k) for k, c in by_cell(a).items() if c["p"] is not None)
    m = len(tested)
    assert m == 5
    adj = {}
    if correction == "holm":
        running = 0.0
        for i, (p, k) in enumerate(tested):
            running = max(running, min(1.0, (m - i) * p))
            adj[k] = running
    else:
        running = 1.0
        for i in range(m - 1, -1, -1):
            p, k = tested[i]
            running = min(running, m * p / (i + 1))
            adj[k] = running
    for k, c in by_cell(a).items():
        if k in adj:
            assert c["p_adjusted"] == pytest.approx(adj[k], rel=1e-12)
            assert c["significant"] == (adj[k] < 0.01)
        else:
            assert c["p_adjusted"] is None and not c["significant"]


def test_welch_cells_equal_scipy(table):
    cells = by_cell(run(table, welch=True))
    for (t, s), (mtl, stilts) in CELLS.items():
        c = cells[(get_task(t).name, get_task(s).name)]
        if len(stilts) > 1:
            ref = scipy.stats.ttest_ind(mtl, stilts, equal_var=False)
            assert abs(c["t"] - ref.statistic) <= 1e-12 and abs(c["p"] - ref.pvalue) <= 1e-12


# ---------------------------------------------------------------- beyond the paper
def test_bootstrap_reproducible_and_sensible(table):
    a, b = np.array([70.1, 71.7, 72.2, 69.5, 70.9]), np.array([60.3, 61.8, 62.4, 59.9, 61.1])
    ci1 = stats.bootstrap_diff_ci(a, b, np.random.default_rng(3), n_boot=500)
    ci2 = stats.bootstrap_diff_ci(a, b, np.random.default_rng(3), n_boot=500)
    ci3 = stats.bootstrap_diff_ci(a, b, np.random.default_rng(4), n_boot=500)
    assert ci1 == ci2 and ci1 != ci3
    # every resampled mean lies between the sample's min and max, and the CI brackets the difference
    assert min(a) - max(b) <= ci1[0] < a.mean() - b.mean() < ci1[1] <= max(a) - min(b)
    # the whole analysis is reproducible for a seed, and the seed matters
    assert run(table, seed=1)["cells"] == run(table, seed=1)["cells"] != run(table, seed=2)["cells"]


def test_bootstrap_equals_scipy_on_the_same_resamples():
    """The percentile interval is scipy.stats.bootstrap's (independent samples, method="percentile"):
    with the same seed both draw the same resamples (a's indices, then b's), so the bounds agree to
    rounding, at the default level and at others."""
    a, b = np.array([71.2, 69.8, 72.5, 70.1, 73.0]), np.array([68.0, 70.4, 67.1, 69.9, 68.8, 66.5])

    def diff(x, y, axis=-1):
        return x.mean(axis) - y.mean(axis)

    for n_boot, level in ((None, None), (2000, 0.9), (2000, 0.5)):  # None: the defaults, 10,000 and 95%
        kw = {k: v for k, v in (("n_boot", n_boot), ("level", level)) if v is not None}
        ours = stats.bootstrap_diff_ci(a, b, np.random.default_rng(3), **kw)
        ref = scipy.stats.bootstrap((a, b), diff, n_resamples=n_boot or 10000, vectorized=True, paired=False,
                                    method="percentile", confidence_level=level or 0.95,
                                    rng=np.random.default_rng(3)).confidence_interval
        assert ours == pytest.approx((ref.low, ref.high), abs=1e-9), level


def test_bootstrap_needs_a_score_on_each_side_and_one_is_enough():
    rng = np.random.default_rng(0)
    for a, b in (([], [1.0, 2.0]), ([1.0, 2.0], []), ([], [])):
        with pytest.raises(ValueError, match="^bootstrap_diff_ci needs at least one score on each side$"):
            stats.bootstrap_diff_ci(a, b, rng)
    # one score: that side's every resample is the score itself; the other side's means lie in [60, 62]
    low, high = stats.bootstrap_diff_ci([70.0], [60.0, 62.0], rng, n_boot=200)
    assert 8.0 <= low < high <= 10.0
    low, high = stats.bootstrap_diff_ci([60.0, 62.0], [70.0], rng, n_boot=200)
    assert -10.0 <= low < high <= -8.0


def test_bootstrap_interval_covers_the_true_difference_95_percent_of_the_time():
    """Coverage on simulated normal samples (n = m = 20, unequal variances): over 400 draws the
    default interval holds the true difference 0.5 in 90-98% of them (the percentile bootstrap is
    slightly narrow at n = 20; a 90% or 50% interval would cover ~88% or ~50%). Fixed seed: the
    count is deterministic, so the test cannot flake."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        a, b = rng.normal(0.5, 1.0, 20), rng.normal(0.0, 2.0, 20)
        low, high = stats.bootstrap_diff_ci(a, b, rng, n_boot=1000)
        hits += low <= 0.5 <= high
    assert 0.90 <= hits / 400 <= 0.98, hits / 400


def test_violation_ratio_by_hand():
    assert stats.violation_ratio([1.0, 2, 3], [2.0, 3, 4]) == pytest.approx(1.0)  # a worse at every quantile
    assert stats.violation_ratio([2.0, 3, 4], [1.0, 2, 3]) == pytest.approx(0.0)
    # a = {0, 10}, b = {5, 6}: on t in (0, 1/2] Qb - Qa = 5, on (1/2, 1] it is -4
    assert stats.violation_ratio([0.0, 10], [5.0, 6]) == pytest.approx((0.5 * 25) / (0.5 * 25 + 0.5 * 16))
    # unequal sizes: a = {0, 10}, b = {1, 2, 3}; breakpoints 1/3, 1/2, 2/3; Qb - Qa = 1, 2, -8, -7
    viol = 1 / 3 * 1 + 1 / 6 * 4
    total = viol + 1 / 6 * 64 + 1 / 3 * 49
    assert stats.violation_ratio([10.0, 0], [3.0, 1, 2]) == pytest.approx(viol / total)
    assert np.isnan(stats.violation_ratio([1.0, 2], [2.0, 1]))


def test_aso_min_epsilon():
    rng = np.random.default_rng(0)
    better, worse = rng.normal(75, 1, 10), rng.normal(70, 1, 10)
    eps = stats.aso_min_epsilon(better, worse, np.random.default_rng(1))
    assert eps == stats.aso_min_epsilon(better, worse, np.random.default_rng(1))
    assert 0 <= eps < 0.2
    assert stats.aso_min_epsilon(worse, better, np.random.default_rng(1)) > 0.8
    # eps_min is an upper bound: never below the point estimate
    a, b = rng.normal(70, 2, 5), rng.normal(70.5, 2, 5)
    assert stats.aso_min_epsilon(a, b, np.random.default_rng(2)) >= stats.violation_ratio(a, b)


def test_power_against_simulation():
    diff, std, alpha = 2.0, 1.5, 0.1
    n = stats.seeds_needed(diff, std, alpha, power=0.8)
    assert stats.t_test_power(diff, std, n, alpha) >= 0.8 > stats.t_test_power(diff, std, n - 1, alpha)
    # Monte Carlo: the fraction of simulated Student t-tests that reject
    rng = np.random.default_rng(0)
    for k in (n - 1, n):
        a = rng.normal(diff, std, (20000, k))
        b = rng.normal(0.0, std, (20000, k))
        sp2 = (a.var(1, ddof=1) + b.var(1, ddof=1)) / 2
        t = (a.mean(1) - b.mean(1)) / np.sqrt(sp2 * 2 / k)
        simulated = np.mean(np.abs(t) > scipy.stats.t.ppf(1 - alpha / 2, 2 * k - 2))
        assert abs(simulated - stats.t_test_power(diff, std, k, alpha)) < 0.015
    assert stats.seeds_needed(0.0, 1.0, 0.05) is None


def test_logistic_fit_and_crossover():
    rng = np.random.default_rng(0)
    x = rng.uniform(-4, 4, 400)
    y = (rng.uniform(size=400) < 1 / (1 + np.exp(-(0.5 + 1.5 * x)))).astype(float)
    fit = stats.logistic_fit(x, y)
    assert fit.converged

    def nll(beta):
        eta = beta[0] + beta[1] * x
        return np.sum(np.logaddexp(0, eta) - y * eta)

    ref = scipy.optimize.minimize(nll, np.zeros(2), method="BFGS", options={"gtol": 1e-9}).x
    np.testing.assert_allclose(fit.coef, ref, atol=1e-4)
    xc, lo, hi = stats.crossover(fit)
    assert xc == pytest.approx(-fit.coef[0] / fit.coef[1]) and lo < -0.5 / 1.5 < hi and hi - lo < 1.0
    # perfectly separated classes have no finite maximum: reported, not a runaway fit
    sep = stats.logistic_fit(np.array([-2.0, -1, 1, 2]), np.array([0.0, 0, 1, 1]))
    assert not sep.converged and "separable" in sep.reason and np.isnan(stats.crossover(sep)[0])


def test_logistic_in_the_analysis(table):
    lg = run(table)["logistic"]
    sig = {("CoLA", "MRPC"): 1.0, ("MRPC", "CoLA"): 1.0, ("MRPC", "RTE"): 0.0, ("RTE", "MRPC"): 1.0}
    x = np.array([math.log2(SIZES[s] / SIZES[t]) for t, s in sig])
    fit = stats.logistic_fit(x, np.array(list(sig.values())))
    assert lg["n"] == 4 and lg["n_mtl_better"] == 3 and lg["converged"]
    assert lg["slope"] == pytest.approx(fit.coef[1])
    # 4 cells are too few to place a crossover: a warning instead
    assert lg["crossover_ratio"] is None and "only 4 significant cells" in lg["warning"]
    assert "**Warning**: only 4 significant cells" in render_markdown(run(table))


# ---------------------------------------------------------------- power, logistic fit, tables: exact references
def power_by_quadrature(diff, std, n, alpha):
    """P(|T| > c) for T = (Z + nc) / sqrt(V / df), Z normal, V chi2(df): integrated over V with quad,
    an oracle independent of scipy's noncentral t (sps.nct), which tl uses."""
    df, nc = 2 * n - 2, abs(diff) / (std * math.sqrt(2 / n))
    c = scipy.stats.t.ppf(1 - alpha / 2, df)

    def integrand(v):
        s = c * math.sqrt(v / df)
        log_chi2 = (df / 2 - 1) * math.log(v) - v / 2 - scipy.special.gammaln(df / 2) - df / 2 * math.log(2)
        return (scipy.special.ndtr(nc - s) + scipy.special.ndtr(-nc - s)) * math.exp(log_chi2)

    return scipy.integrate.quad(integrand, 0, math.inf, epsabs=1e-13, epsrel=1e-11, limit=200)[0]


def test_power_equals_the_noncentral_t_integral():
    # std 1; n = 2 (df 2); a negative diff; n = 3 with noncentrality 10, where scipy's lower tail is NaN
    for diff, std, n, alpha in ((1.0, 1.0, 17, 0.05), (10.0, 1.0, 2, 0.05), (-0.7, 1.3, 5, 0.1),
                                (10 * math.sqrt(2 / 3), 1.0, 3, 0.05), (2.0, 1.5, 4, 0.1)):
        assert stats.t_test_power(diff, std, n, alpha) == pytest.approx(power_by_quadrature(diff, std, n, alpha),
                                                                         rel=1e-9), (diff, std, n)
    # no true difference: the test rejects at its level, half in each tail
    assert stats.t_test_power(0.0, 1.0, 5, 0.05) == pytest.approx(0.05, rel=1e-12)
    # no noise: any difference is found; none is found at the level
    assert stats.t_test_power(1.0, 0.0, 4, 0.05) == stats.t_test_power(-2.5, 0.0, 4, 0.05) == 1.0
    assert stats.t_test_power(0.0, 0.0, 4, 0.05) == 0.05
    # an infinite difference is always found; a NaN difference or std has no power, so no seed count
    assert stats.t_test_power(math.inf, 1.0, 4, 0.05) == 1.0
    assert stats.t_test_power(math.nan, 1.0, 4, 0.05) == stats.t_test_power(1.0, math.nan, 4, 0.05) == 0.0
    assert stats.seeds_needed(math.nan, 1.0, 0.05) is None


def test_seeds_needed_is_the_smallest_n_reaching_the_power():
    # default power 0.8: d = 1 std needs 17 seeds per method (the textbook figure), by a scan of the oracle
    scan = next(n for n in range(2, 100) if power_by_quadrature(1.0, 1.0, n, 0.05) >= 0.8)
    assert scan == 17 and stats.seeds_needed(1.0, 1.0, 0.05) == 17
    assert stats.seeds_needed(10.0, 1.0, 0.05) == 2  # 2 seeds already give 99% power
    # ">= power": a target equal to the power at k seeds needs exactly k, at either end and inside
    for k in (2, 5, 10):
        target = stats.t_test_power(0.8, 1.0, k, 0.05)
        assert stats.seeds_needed(0.8, 1.0, 0.05, power=target, max_n=10) == k
    assert stats.seeds_needed(0.8, 1.0, 0.05, power=stats.t_test_power(0.8, 1.0, 11, 0.05), max_n=10) is None
    # more than the default max_n = 1000 seeds: None, even one past it; a tiny difference: None
    assert stats.seeds_needed(0.1, 1.0, 0.05, power=stats.t_test_power(0.1, 1.0, 1001, 0.05)) is None
    assert stats.seeds_needed(0.01, 1.0, 0.05) is None


def test_size_heuristic_picks_stilts_on_equal_sizes():
    np.testing.assert_array_equal(size_heuristic_picks_mtl([100, 200, 300], [200, 200, 200]),
                                  [True, False, False])


def test_heuristic_accuracy_by_hand():
    # significant and picks as 0/1 numbers (as read from a table); diff 0 counts as STILTs better (MTL iff diff > 0)
    diff = [0.0, 0.5, -2.0, 3.0]  # cell 1 correct (STILTs picked), 2 correct (MTL), 3 wrong, 4 not significant
    assert heuristic_accuracy(diff, [1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]) == (3, 2, 2 / 3)
    n_sig, n_ok, acc = heuristic_accuracy(diff, [False] * 4, [True] * 4)
    assert (n_sig, n_ok) == (0, 0) and math.isnan(acc)


def test_describe_small_samples_quietly_and_in_float64():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns on the mean of nothing and on ddof=1 with one value
        n, mean, std = stats.describe([])
        assert n == 0 and math.isnan(mean) and math.isnan(std)
        n, mean, std = stats.describe([5.0])
        assert (n, mean) == (1, 5.0) and math.isnan(std)
    # float32 scores: 1 + 2^-24 rounds to 1 in float32, so only a float64 mean is 1/2 + 2^-25
    n, mean, std = stats.describe(np.array([1.0, 2.0**-24], dtype=np.float32))
    assert mean == 0.5 + 2.0**-25 and std == pytest.approx((1 - 2.0**-24) / math.sqrt(2), rel=1e-15)


def test_tables_with_a_lone_cell_and_an_empty_target():
    nan = np.nan
    mtl = np.array([[70.0, nan], [nan, nan], [nan, 80.0]])  # target 0 one MTL cell; target 1 none at all
    stilts = np.array([[60.0, nan], [nan, nan], [nan, 82.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty target is NaN without numpy's all-NaN warning
        t1 = table1(mtl, stilts, np.array([1.0, 2.0, nan]))
    np.testing.assert_array_equal(t1, [[70.0, 60.0, 70.0, 1.0], [nan, nan, nan, 2.0], [80.0, 82.0, 82.0, nan]])
    picks = np.array([[False, True], [True, True], [True, True]])
    t2 = table2(np.array([50.0, 51.0, 52.0]), mtl, stilts, picks)  # (T,) MTL-ALL: one sampler
    np.testing.assert_array_equal(t2, [[50.0, 60.0, 70.0], [51.0, nan, nan], [52.0, 80.0, 82.0]])
    np.testing.assert_array_equal(table2(np.array([[50.0], [51.0], [52.0]]), mtl, stilts, picks), t2)


def assert_no_fit(fit, reason):
    assert fit.coef.shape == (2,) and np.isnan(fit.coef).all() and fit.cov.shape == (2, 2) and np.isnan(fit.cov).all()
    assert fit.converged is False and fit.n_iter == 0 and fit.reason == reason


def test_logistic_fit_refusals():
    for x, y in (([1.0, 2, 3], [0.0, 0, 0]), ([1.0, 2], [1.0, 1])):
        assert_no_fit(stats.logistic_fit(np.array(x), np.array(y)), "one class only")
    # classes that only touch (both at x = 1) still have no finite maximum: the slope runs off to infinity
    for y in ([0.0, 0, 1, 1], [1.0, 1, 0, 0]):
        assert_no_fit(stats.logistic_fit(np.array([0.0, 1, 1, 2]), np.array(y)), "classes separable: no finite fit")


def test_logistic_fit_saturated_model_in_closed_form():
    """x in {0, 1}: two parameters for two groups, so the fitted P(y = 1) at each x is the group's share
    (1/5 at 0, 3/4 at 1): coef = (logit 1/5, logit 3/4 - logit 1/5) = (-log 4, log 12). The inverse
    Fisher information is Woolf's: var b0 = 1 / (n0 p0 q0), var b1 = var b0 + 1 / (n1 p1 q1), cov = -var b0."""
    x = [0] * 5 + [1] * 4
    y = [1, 0, 0, 0, 0] + [1, 1, 1, 0]
    fit = stats.logistic_fit(x, y)
    assert fit.converged and fit.reason == ""
    np.testing.assert_allclose(fit.coef, [-math.log(4), math.log(12)], rtol=1e-9)  # Newton stops at steps < 1e-10
    v0, v1 = 1 / (5 * 0.2 * 0.8), 1 / (4 * 0.75 * 0.25)
    np.testing.assert_allclose(fit.cov, [[v0, -v0], [-v0, v0 + v1]], rtol=1e-9)
    # one Newton step from 0 (every p = 1/2, weight 1/4) is 4 x the least squares fit of y - 1/2 on x:
    # (4 (1/5 - 1/2), 4 (3/4 - 1/5)) = (-1.2, 2.2); with max_iter=1 that is where it stops, unconverged
    one = stats.logistic_fit(x, y, max_iter=1)
    np.testing.assert_allclose(one.coef, [-1.2, 2.2], rtol=1e-12)
    assert one.n_iter == 1 and not one.converged and np.isnan(stats.crossover(one)).all()
    # the stop is strict (step < tol): with tol = the first step's 2.2 the second step (0.27) stops it
    assert stats.logistic_fit(x, y, tol=np.abs(one.coef).max()).n_iter == 2
    # crossover -b0 / b1 = log 4 / log 12; delta method: gradient (-1 / b1, -xc / b1)
    b0, b1 = -math.log(4), math.log(12)
    xc = -b0 / b1
    half = scipy.stats.norm.ppf(0.95) * math.sqrt((v0 + xc**2 * (v0 + v1) - 2 * xc * v0) / b1**2)
    assert stats.crossover(fit, level=0.9) == pytest.approx((xc, xc - half, xc + half), abs=1e-9)


def test_crossover_delta_method_by_hand():
    cov = np.array([[0.5, -0.2], [-0.2, 0.1]])
    fit = stats.LogisticFit(np.array([-3.0, 2.0]), cov, True, 5)
    # xc = 1.5; var = (0.5 + 1.5^2 * 0.1 + 2 * 1.5 * -0.2) / 2^2 = 0.125 / 4
    half = scipy.stats.norm.ppf(0.975) * math.sqrt(0.125 / 4)
    assert stats.crossover(fit) == pytest.approx((1.5, 1.5 - half, 1.5 + half), rel=1e-12)
    assert stats.crossover(stats.LogisticFit(np.array([-1.0, 1.0]), cov, True, 5))[0] == 1.0  # slope exactly 1
    assert np.isnan(stats.crossover(stats.LogisticFit(np.array([1.0, 0.0]), cov, True, 5))).all()  # flat


def test_logistic_fit_halves_steps_where_newton_overshoots():
    """1,452 points at 6 distinct x (near separation) on which plain Newton from 0 overshoots at its
    7th step, diverges and meets a singular Hessian at its 11th; the step-halved fit reaches the
    maximum: the score equations X'(p - y) = 0 hold, and scipy's BFGS finds the same coefficients."""
    counts = [1164, 1, 107, 2, 170, 8]
    x = np.repeat([-3.3, 1.1, 1.3, -1.1, 1.8, -4.3], counts)
    y = np.repeat([0.0, 1, 0, 0, 0, 1], counts)
    fit = stats.logistic_fit(x, y)
    assert fit.converged
    p = 1 / (1 + np.exp(-(fit.coef[0] + fit.coef[1] * x)))
    assert abs(np.sum(p - y)) < 1e-8 and abs(np.sum(x * (p - y))) < 1e-8

    def nll_and_grad(beta):
        eta = beta[0] + beta[1] * x
        r = 1 / (1 + np.exp(-eta)) - y
        return np.sum(np.logaddexp(0, eta) - y * eta), np.array([r.sum(), (x * r).sum()])

    ref = scipy.optimize.minimize(nll_and_grad, np.zeros(2), jac=True, method="BFGS", options={"gtol": 1e-9}).x
    np.testing.assert_allclose(fit.coef, ref, rtol=1e-8)


# ---------------------------------------------------------------- inputs
def test_csv_names_and_methods(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("score,seed,method,support,target\n70,1,MTL,mnli,sst2\n71,2,mtl_all:Dynamic,,Sts-B\n"
                    "72,3,mtl_all:size,,qnli\n73,4,mtl:uniform,rte,qnli\n")
    rows = read_scores_csv(path)
    assert [(r.target, r.support, r.method) for r in rows] == [
        ("SST-2", "MNLI", "mtl"), ("STS-B", "", "mtl_all"), ("QNLI", "", "mtl_all:size"),
        ("QNLI", "RTE", "mtl:uniform")]
    assert rows[0].source == f"{path}:2"


@pytest.mark.parametrize("content, message", [
    ("target,support,method,seed\nrte,mrpc,mtl,1\n", "missing column 'score'"),
    ("target,support,method,seed,score\nrte,mrpc,mtl,1,70\nrte,mrpc,mtl,2,seventy\n",
     ":3: score 'seventy' is not a number"),
    ("target,support,method,seed,score\nrte,mrpc,mtl,x,70\n", ":2: seed 'x' is not an integer"),
    ("target,support,method,seed,score\nrte,mrpc,pretrain,1,70\n", ":2: unknown method 'pretrain'"),
    ("target,support,method,seed,score\nrte,,stilts,1,70\n", ":2: method stilts needs a support"),
    ("target,support,method,seed,score\n", "no score rows"),
    ("target,support,method,seed,score\nrte,mrpc,mtl,1,70\nRTE,MRPC,mtl,1,71\n", "two scores for target RTE"),
])
def test_bad_tables(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError) as e:
        read_scores_csv(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_tool_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("target,support,method,seed\nrte,mrpc,mtl,1\n")
    assert stats_tool.main(["--scores", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing column 'score'" in err and str(bad) in err and err.count("\n") == 1
    empty = tmp_path / "results"
    empty.mkdir()
    assert stats_tool.main(["--results", str(empty), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no complete run records" in err and "python tools/train.py" in err and "--scores" in err
    assert stats_tool.main(["--results", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_all_single_seed_cells_do_not_crash(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("target,support,method,seed,score\nrte,mrpc,mtl,1,70\nrte,mrpc,stilts,1,60\nrte,mrpc,mtl,2,71\n")
    a = analyse(read_scores_csv(path), StatsSettings(power=1.0), SIZES)
    (c,) = a["cells"]
    assert c["p"] is None and c["significant"] is False and c["seeds_needed"] is None
    assert a["summary"]["n_significant"] == 0 and a["summary"]["accuracy"] is None
    assert not a["logistic"]["converged"]


# ---------------------------------------------------------------- tools/stats.py end to end
def test_tool_on_a_scores_table(table, tmp_path, capsys):
    out, js = tmp_path / "out", tmp_path / "a.json"
    assert stats_tool.main(["--scores", str(table), "--out", str(out), "--json", str(js), "--power", "2"]) == 0
    printed = capsys.readouterr().out
    assert "Student two-sample t-test (pooled variance), two-sided; alpha = 0.1; correction: none" in printed
    assert "3 of 4 significant cells" in printed
    for name in ("report.md", "cells.csv", "table1.csv", "table2.csv", "singles.csv", "figure1.png", "figure1.svg"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "figure2.png").exists()  # no size experiment in this table
    data = json.loads(js.read_text())
    assert data["summary"]["n_correct"] == 3 and data["summary"]["accuracy"] == 0.75
    required = ["target", "support", "n_mtl", "n_stilts", "mean_mtl", "std_mtl", "mean_stilts", "std_stilts",
                "diff", "t", "p", "significant", "predicted", "correct"]
    assert all(set(required) <= set(c) for c in data["cells"]) and len(data["cells"]) == 6
    assert set(data["tables"]) >= {"table1", "table2"}
    with open(out / "cells.csv") as f:
        assert len(list(csv.DictReader(f))) == 6
    assert (out / "report.md").read_text() in printed


def record(results: Path, mode, target, supports, seed, score, sampler=None, sizes=None, config=None, **extra):
    rid = f"{mode}__{target}+{'+'.join(supports)}__{sampler}__{extra.get('tag', '')}s{seed}"
    extra.pop("tag", None)
    body = {"schema": 1, "run_id": rid, "status": "complete", "mode": mode, "target": target, "supports": supports,
            "sampler": sampler, "seed": seed, "score": score, "train_sizes": sizes or {}, "config": config or {},
            **extra}
    (results / rid).mkdir(parents=True)
    (results / rid / "record.json").write_text(json.dumps(body))


def test_tool_on_run_records(tmp_path, capsys):
    res = tmp_path / "results"
    # a quick run with --limit-train: recorded sizes (RTE 300 > MRPC 200) override the official ones
    lim = {"RTE": 300, "MRPC": 200}
    for seed, (m, s) in enumerate([(70, 60), (71, 61), (72, 62)]):
        record(res, "mtl", "RTE", ["MRPC"], seed, m, "dynamic", lim, {"limit_train": 300})
        record(res, "stilts", "RTE", ["MRPC"], seed, s, None, lim, {"limit_train": 300})
        record(res, "mtl", "MRPC", ["RTE"], seed, 80 + seed, "dynamic", lim)
        record(res, "stilts", "MRPC", ["RTE"], seed, 80 + seed % 2, None, lim)
        record(res, "mtl", "RTE", ["MRPC"], seed, 10, "uniform", lim)  # another sampler: method mtl:uniform
        for t in ("RTE", "MRPC"):
            record(res, "mtl_all", t, [u for u in ("RTE", "MRPC") if u != t], seed, 65 + seed, "size", lim)
        # the joint mtl_all training run's own record is skipped (its per-task records hold the scores)
        record(res, "mtl_all", "RTE", ["MRPC"], seed, 0, "size", lim, role="train", tag="joint")
    record(res, "mtl", "MRPC", ["RTE"], 9, 0, "dynamic", lim, status="running")
    # the size experiment: QNLI (1000, then halved to 500) with MNLI at K x the target size
    for n_t in (1000, 500):
        for k_text, k in (("1/3x", 1 / 3), ("1x", 1.0), ("2x", 2.0)):
            for seed in (1, 2):
                sizes = {"QNLI": n_t, "MNLI": round(k * n_t)}
                cfg = {"support_size": k_text, "target_size": n_t if n_t == 500 else 0}
                for mode, base, sampler in (("mtl", 80, "dynamic"), ("stilts", 82, None)):
                    record(res, mode, "QNLI", ["MNLI"], seed, base + 2 * k + seed / 2, sampler, sizes, cfg,
                           tag=f"{n_t}{k_text.replace('/', '_')}")
    out, js = tmp_path / "out", tmp_path / "a.json"
    assert stats_tool.main(["--results", str(res), "--out", str(out), "--json", str(js), "--welch"]) == 0
    printed = capsys.readouterr().out
    assert "Welch two-sample t-test" in printed and "protocol tl" in printed
    for name in ("report.md", "figure1.png", "figure1.svg", "figure2.png", "figure2.svg", "size_experiment.csv"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads(js.read_text())
    cells = by_cell(data)
    assert set(cells) == {("RTE", "MRPC"), ("MRPC", "RTE")}  # mtl:uniform and the size runs are not matrix cells
    assert data["sizes"]["RTE"] == 300 and data["sizes"]["MRPC"] == 200
    assert cells[("RTE", "MRPC")]["predicted"] == "stilts" and cells[("RTE", "MRPC")]["correct"] is False
    assert cells[("RTE", "MRPC")]["n_mtl"] == 3
    t2 = {r["target"]: r for r in data["tables"]["table2"]["rows"]}
    assert t2["RTE"]["MTL-ALL (size)"] == pytest.approx((65 + 66 + 67) / 3)
    points = {(p["target_size"], round(p["k"], 4)): p for p in data["size_experiment"]}
    assert set(points) == {(n, round(k, 4)) for n in (1000, 500) for k in (1 / 3, 1.0, 2.0)}
    assert points[(500, 2.0)]["mean_mtl"] == pytest.approx(80 + 4 + (0.5 + 1) / 2)
    assert points[(500, 2.0)]["n_stilts"] == 2


def test_records_skip_incomplete_and_explain(tmp_path):
    res = tmp_path / "results"
    record(res, "mtl", "RTE", ["MRPC"], 1, 70, "dynamic", status="failed")
    with pytest.raises(ValueError, match=r"no complete run records .*tools/train.py"):
        read_run_records(res)


def test_missing_matplotlib_is_one_clear_line(table, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    assert stats_tool.main(["--scores", str(table), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: figures need matplotlib") and "pip install" in err and "--no-plots" in err
    assert stats_tool.main(["--scores", str(table), "--out", str(tmp_path / "o"), "--no-plots"]) == 0
    assert (tmp_path / "o" / "report.md").exists() and not (tmp_path / "o" / "figure1.png").exists()


def test_size_experiment_from_a_scores_table(tmp_path):
    path = tmp_path / "s.csv"
    lines = ["target,support,method,seed,score,support_size,target_size"]
    for k in ("1/3x", "3x", "300"):
        for seed in (1, 2, 3):
            lines += [f"qnli,mnli,mtl,{seed},{80 + seed},{k},", f"qnli,mnli,stilts,{seed},{79 + seed},{k},100"]
    path.write_text("\n".join(lines) + "\n")
    a = analyse(read_scores_csv(path), StatsSettings(), {"QNLI": 100, "MNLI": 1000})
    assert a["cells"] == []  # every row belongs to the size experiment
    got = sorted((p["target_size"], round(p["k"], 6), p["n_mtl"], p["n_stilts"]) for p in a["size_experiment"])
    # a count (300) is divided by the target size (100, from the sizes here): K = 3, the same point as 3x
    assert got == [(100, round(1 / 3, 6), 3, 3), (100, 3.0, 6, 6)]


# ---------------------------------------------------------------- protocols, passes, report fixes
def test_average_pairwise_by_hand():
    nan = np.nan
    mtl = np.array([[70.0, 60.0, nan], [nan, 80.0, 81.0]])  # (T=2, S=3)
    stilts = np.array([[65.0, 62.0, 90.0], [nan, 85.0, 79.0]])
    # target 0: support 2 lacks MTL, so it is left out (np.maximum gives NaN there, as the authors')
    # target 1: support 0 has neither
    np.testing.assert_allclose(average_pairwise(mtl, stilts), [(70 + 62) / 2, (85 + 81) / 2])
    assert np.isnan(average_pairwise(np.full((1, 2), nan), np.array([[1.0, 2.0]])))[0]
    t1 = table1(mtl, stilts, np.array([50.0, nan]))
    np.testing.assert_allclose(t1[:, 2], [(70 + 62) / 2, (85 + 81) / 2])
    np.testing.assert_allclose(t1[0], [(70 + 60) / 2, (65 + 62 + 90) / 3, 66.0, 50.0])


def write_mixed(path: Path, protocol_of_second="authors") -> Path:
    path.write_text("target,support,method,seed,score,protocol\n"
                    "rte,mrpc,mtl,1,70,\nrte,mrpc,mtl,2,71,tl\nrte,mrpc,stilts,1,60,tl\nrte,mrpc,stilts,2,61,\n"
                    f"rte,mrpc,mtl,1,50,{protocol_of_second}\nrte,mrpc,mtl,2,52,{protocol_of_second}\n"
                    f"rte,mrpc,stilts,1,55,{protocol_of_second}\nrte,mrpc,stilts,2,57,{protocol_of_second}\n")
    return path


def test_mixed_protocols_are_refused(tmp_path, capsys):
    table = write_mixed(tmp_path / "mixed.csv")
    rows = read_scores_csv(table)  # the same seed under two protocols is not a duplicate
    assert sorted({r.protocol for r in rows}) == ["authors", "tl"]
    with pytest.raises(ValueError, match="mix protocols authors and tl.*--protocol authors\\|tl"):
        analyse(rows, StatsSettings(), SIZES)
    assert stats_tool.main(["--scores", str(table), "--out", str(tmp_path / "o"), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "authors and tl" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    # --protocol picks one: empty protocol cells are tl
    for protocol, mtl in (("tl", [70, 71]), ("authors", [50, 52])):
        out = tmp_path / protocol
        assert stats_tool.main(["--scores", str(table), "--out", str(out), "--no-plots", "--protocol", protocol]) == 0
        report = (out / "report.md").read_text()
        assert report.startswith(f"# MTL vs STILTs: statistics, protocol {protocol}")
        assert f"## Table 1: mean over supports (protocol {protocol})" in report
        with open(out / "cells.csv") as f:
            (cell,) = list(csv.DictReader(f))
        assert cell["protocol"] == protocol and float(cell["mean_mtl"]) == pytest.approx(sum(mtl) / 2)
    with pytest.raises(ValueError, match="unknown protocol 'external'"):
        read_scores_csv(write_mixed(tmp_path / "bad.csv", "external"))
    with pytest.raises(ValueError, match="no scores under protocol 'authors'; the scores hold tl"):
        analyse(read_scores_csv(write_table(tmp_path / "tl.csv")), StatsSettings(protocol="authors"), SIZES)


def test_records_protocol_and_passes_in_cells_csv(tmp_path, capsys):
    res = tmp_path / "results"
    for seed in (1, 2, 3):
        # tl: one pass of RTE per epoch; authors: RTE ~1 pass per epoch too, MRPC's share far below
        passes = {"RTE": 10.0 + seed, "MRPC": 0.5}
        record(res, "mtl", "RTE", ["MRPC"], seed, 70 + seed, "dynamic", passes=passes)
        record(res, "stilts", "RTE", ["MRPC"], seed, 60 + seed, None, passes={"RTE": 10.0})
        # the authors' pairs run uniform sampling (their pair script), their size plan dynamic-softmax
        record(res, "mtl", "RTE", ["MRPC"], seed, 50 + seed, "uniform", protocol="authors", tag="a",
               passes={"rte": 2.0 * seed})
        record(res, "stilts", "RTE", ["MRPC"], seed, 40 + seed, None, protocol="authors", tag="a")  # no passes
        cfg = {"support_size": "2x"}
        record(res, "mtl", "RTE", ["MRPC"], seed, 30 + seed, "dynamic-softmax", config=cfg, protocol="authors",
               tag="k2")
        record(res, "stilts", "RTE", ["MRPC"], seed, 20 + seed, None, config=cfg, protocol="authors", tag="k2")
    out = tmp_path / "out"
    assert stats_tool.main(["--results", str(res), "--out", str(out), "--no-plots"]) == 2
    assert "mix protocols authors and tl" in capsys.readouterr().err
    assert stats_tool.main(["--results", str(res), "--out", str(out), "--no-plots", "--protocol", "tl"]) == 0
    with open(out / "cells.csv") as f:
        (cell,) = list(csv.DictReader(f))
    assert cell["protocol"] == "tl" and float(cell["mean_mtl"]) == pytest.approx(72)
    assert float(cell["passes_mtl"]) == pytest.approx((11 + 12 + 13) / 3) and float(cell["passes_stilts"]) == 10
    assert "12 / 10" in (out / "report.md").read_text()  # the cells table's passes column
    assert stats_tool.main(["--results", str(res), "--out", str(out), "--no-plots", "--protocol", "authors"]) == 0
    with open(out / "cells.csv") as f:
        (cell,) = list(csv.DictReader(f))
    assert cell["protocol"] == "authors" and float(cell["mean_mtl"]) == pytest.approx(52)
    assert float(cell["passes_mtl"]) == pytest.approx(4.0) and cell["passes_stilts"] == ""  # unknown: blank
    report = (out / "report.md").read_text()
    assert "## Cells (MTL − STILTs), protocol authors, MTL = mtl:uniform" in report
    assert "protocol authors, MTL = mtl:dynamic-softmax" in report
    with open(out / "size_experiment.csv") as f:
        (point,) = list(csv.DictReader(f))
    assert float(point["mean_mtl"]) == pytest.approx(32) and float(point["mean_stilts"]) == pytest.approx(22)


def test_passes_column_in_a_scores_table(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("target,support,method,seed,score,passes\nrte,mrpc,mtl,1,70,9.5\nrte,mrpc,mtl,2,71,10.5\n"
                    "rte,mrpc,stilts,1,60,\nrte,mrpc,stilts,2,61,\n")
    (c,) = analyse(read_scores_csv(path), StatsSettings(), SIZES)["cells"]
    assert c["passes_mtl"] == pytest.approx(10.0) and c["passes_stilts"] is None
    path.write_text("target,support,method,seed,score,passes\nrte,mrpc,mtl,1,70,many\n")
    with pytest.raises(ValueError, match=":2: passes 'many' is not a number"):
        read_scores_csv(path)


def test_identical_seeds_are_not_hatched(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("target,support,method,seed,score\n"
                    "rte,mrpc,mtl,1,70\nrte,mrpc,mtl,2,70\nrte,mrpc,stilts,1,70\nrte,mrpc,stilts,2,70\n"  # identical
                    "mrpc,rte,mtl,1,80\nmrpc,rte,mtl,2,81\nmrpc,rte,stilts,1,79\n")  # one STILTs seed
    a = analyse(read_scores_csv(path), StatsSettings(), SIZES)
    cells = by_cell(a)
    assert cells[("RTE", "MRPC")]["note"] == "no test possible (all scores equal)"
    diff, state, miss, targets = matrix_state(a)
    ti, si = {t: i for i, t in enumerate(targets)}, {s: j for j, s in enumerate(a["supports"])}
    assert state[ti["RTE"], si["MRPC"]] == NOT_SIGNIFICANT and diff[ti["RTE"], si["MRPC"]] == 0
    assert state[ti["MRPC"], si["RTE"]] == NO_TEST and not miss.any()


def test_logistic_crossover_needs_enough_identified_cells():
    from tl.study.report import MIN_CELLS_FOR_CROSSOVER, _logistic

    def cells(ratios_and_wins):
        return [dict(significant=True, size_target=100, size_support=100 * r, diff=1.0 if win else -1.0)
                for r, win in ratios_and_wins]

    # 12 cells, MTL winning mostly above ratio 1 with overlap: a crossover near ratio 1
    data = [(r, r > 1) for r in (1 / 8, 1 / 4, 1 / 2, 2, 4, 8)] * 2 + [(1 / 2, True), (2, False)]
    assert len(data) >= MIN_CELLS_FOR_CROSSOVER
    lg = _logistic(cells(data))
    x = np.log2([r for r, _ in data])
    fit = stats.logistic_fit(x, np.array([w for _, w in data], dtype=float))
    assert lg["warning"] == "" and lg["crossover_log2_ratio"] == pytest.approx(-fit.coef[0] / fit.coef[1])
    # the same ratio everywhere: the slope is not identified
    same = _logistic(cells([(2, True), (2, False)] * 6))
    assert not same["converged"] and "not identified" in same["reason"] and same["crossover_ratio"] is None
