"""tl.stats beyond the paper's t-test: almost stochastic order (violation_ratio, aso_min_epsilon: Dror,
Shlomov and Reichart 2019, "Deep Dominance") against an independent reference, the empirical quantile
functions from numpy's `inverted_cdf` on a grid fine enough to make the integrals exact sums; and the
multiple-testing corrections (adjust_pvalues: Holm by hand, Benjamini-Hochberg by hand and by
scipy.stats.false_discovery_control). Small samples, checkable by hand; every expected value is computed
in the test, never by calling the code under test."""
import math
import warnings

import numpy as np
import pytest
import scipy.stats

from tl import stats


def reference_violation_ratio(a, b):
    """eps_W2(a, b) = int max(Qb - Qa, 0)^2 dt / int (Qb - Qa)^2 dt on a uniform grid of L = lcm(n, m)
    cells: every breakpoint i/n, j/m of the two step functions is a multiple of 1/L, so both quantile
    functions (numpy's inverted_cdf: Q(t) = x_(ceil(n t))) are constant on each cell and the integrals are
    exact sums over the cells' midpoints. NaN when the two quantile functions are equal. a (..., n), b
    (..., m): rows of a batch each on their own."""
    a, b = np.asarray(a), np.asarray(b)
    cells = math.lcm(a.shape[-1], b.shape[-1])
    t = (np.arange(cells) + 0.5) / cells
    d = np.quantile(b, t, axis=-1, method="inverted_cdf") - np.quantile(a, t, axis=-1, method="inverted_cdf")
    total, viol = np.sum(d**2, axis=0), np.sum(np.maximum(d, 0.0) ** 2, axis=0)  # d (L, ...)
    return np.where(total > 0, viol / np.where(total > 0, total, 1.0), np.nan)


def test_violation_ratio_equals_the_reference_one_pair_and_a_batch():
    rng = np.random.default_rng(0)
    for n, m in ((5, 5), (4, 6), (7, 3), (1, 4), (6, 1)):
        a, b = rng.normal(70, 2, (3, n)).round(1), rng.normal(70, 2, (3, m)).round(1)  # rounded: ties too
        want = [float(reference_violation_ratio(x, y)) for x, y in zip(a, b)]
        assert sum(0 < w < 1 for w in want) >= 2  # mostly neither side dominates: both integrals matter
        assert [float(stats.violation_ratio(x, y)) for x, y in zip(a, b)] == pytest.approx(want, rel=1e-12)
        # a batch (3, n) against (3, m) is row by row, each row sorted on its own
        assert stats.violation_ratio(a, b) == pytest.approx(want, rel=1e-12)


def test_identical_samples_have_no_violation_ratio_and_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 / 0 is the answer (NaN), not a RuntimeWarning
        assert np.isnan(stats.violation_ratio([1.0, 2.0], [2.0, 1.0]))
        assert np.isnan(stats.violation_ratio([3.0, 3.0], [3.0]))  # the same step function
        batch = stats.violation_ratio([[1.0, 2.0], [1.0, 2.0]], [[2.0, 1.0], [2.0, 3.0]])
        assert np.isnan(batch[0]) and batch[1] == pytest.approx(1.0)
        assert np.isnan(stats.aso_min_epsilon([1.0, 2.0], [2.0, 1.0], np.random.default_rng(0)))


def test_aso_min_epsilon_is_the_bootstrap_upper_bound():
    """eps_min = eps + z_(1 - confidence) std(eps*) (Dror et al. 2019, with resamples of the original sizes):
    eps* over the same resamples (a's indices drawn first, then b's, from the same seed), each computed by
    the reference; resample pairs with equal quantile functions have no eps* and are left out."""
    a = np.array([70.2, 68.9, 71.5, 69.4, 72.0, 70.0])
    b = np.array([70.8, 69.5, 71.1, 68.7, 70.0])
    eps = reference_violation_ratio(a, b)
    for n_boot, confidence in ((None, None), (300, 0.2)):  # None: the defaults, 1,000 and 0.05
        kw = {k: v for k, v in (("n_boot", n_boot), ("confidence", confidence)) if v is not None}
        draw = np.random.default_rng(5)
        ia = draw.integers(0, a.size, size=(n_boot or 1000, a.size))
        ib = draw.integers(0, b.size, size=(n_boot or 1000, b.size))
        boot = reference_violation_ratio(a[ia], b[ib])  # (B,)
        want = eps + scipy.stats.norm.ppf(1.0 - (confidence or 0.05)) * np.nanstd(boot)
        assert eps < want < 1  # no clip: the bound itself is compared
        assert stats.aso_min_epsilon(a, b, np.random.default_rng(5), **kw) == pytest.approx(want, rel=1e-9)


def test_aso_min_epsilon_is_clipped_to_0_1():
    # a worse at 4 of 5 quantiles: eps = 4 / 4.25, and the resampled eps* spread widely (std about 0.3)
    a, b = np.array([1.0, 2, 3, 4, 5.5]), np.array([2.0, 3, 4, 5, 5])
    assert stats.violation_ratio(a, b) == pytest.approx(16 / 17)
    assert stats.aso_min_epsilon(a, b, np.random.default_rng(0), n_boot=200) == 1.0  # eps + 1.645 std > 1
    # the lower bound (confidence 0.95, z < 0) of the reverse comparison, eps = 1/17: below 0 before the clip
    assert stats.aso_min_epsilon(b, a, np.random.default_rng(0), n_boot=200, confidence=0.95) == 0.0


def test_aso_min_epsilon_without_a_comparable_resample_is_eps():
    """a = {1, 2, 3} against b = {2}: eps = 1/2 (Qb - Qa = 1, 0, -1 on thirds). Seed 6's one resample of a
    is {2, 2, 2}, the same distribution as b: no eps*, so no spread to add (not NaN, not 1)."""
    assert (np.random.default_rng(6).integers(0, 3, size=(1, 3)) == 1).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stats.aso_min_epsilon([1.0, 2.0, 3.0], [2.0], np.random.default_rng(6), n_boot=1) == pytest.approx(0.5)


def test_adjust_pvalues_default_clip_and_refusal():
    p = np.array([0.01, 0.6, 0.7])
    np.testing.assert_array_equal(stats.adjust_pvalues(p), p)  # the default: no correction
    # Holm: 3 x 0.01, then 2 x 0.6 = 1.2 clipped to 1, then max(1, 1 x 0.7) = 1 (the running max)
    np.testing.assert_allclose(stats.adjust_pvalues(p, "holm"), [3 * 0.01, 1.0, 1.0], rtol=1e-15)
    # BH: 3 p / rank = 0.03, 0.9, 0.7, then the running min from the largest: never above p_(m) = 0.7
    np.testing.assert_allclose(stats.adjust_pvalues(p, "bh"), [3 * 0.01, 0.7, 0.7], rtol=1e-15)
    np.testing.assert_allclose(stats.adjust_pvalues(p, "bh"), scipy.stats.false_discovery_control(p), rtol=1e-15)
    with pytest.raises(ValueError, match=r"^correction must be none, holm or bh, got 'BH'$"):
        stats.adjust_pvalues(p, "BH")


def test_adjust_pvalues_ties_missing_and_float32():
    # tied p get equal adjusted p: Holm 4 x 0.01, then 3 x 0.02 = 0.06 kept by the running max
    p = np.array([0.02, 0.01, 0.02, 0.02])
    np.testing.assert_allclose(stats.adjust_pvalues(p, "holm"), [0.06, 0.04, 0.06, 0.06], rtol=1e-15)
    # BH: 4 p / rank = 0.04, 0.04, 0.08 / 3, 0.02: the running min from the largest is 0.02 everywhere
    np.testing.assert_allclose(stats.adjust_pvalues(p, "bh"), [0.02] * 4, rtol=1e-15)
    np.testing.assert_allclose(stats.adjust_pvalues(p, "bh"), scipy.stats.false_discovery_control(p), rtol=1e-15)
    # a family with no p-value at all (every cell untested) stays NaN, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for method in ("holm", "bh"):
            assert np.isnan(stats.adjust_pvalues([np.nan, np.nan], method)).all()
    # float32 p-values are adjusted in float64, as every score here
    q = np.array([0.011, 0.047, 0.3], dtype=np.float32).astype(np.float64)
    out = stats.adjust_pvalues(q.astype(np.float32), "holm")
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [3 * q[0], 2 * q[1], q[2]], rtol=1e-15)
