"""Statistics over seed scores: pure functions over numpy arrays, nothing read or written here.
Library file, copyable alone: it imports only numpy and scipy (no tl file).

It follows the analysis of Weller, Seppi and Gardner (ACL 2022), "When to Use Multi-Task Learning vs
Intermediate Fine-Tuning" (docs/PROTOCOL.md), and goes beyond it:

  paper   describe (n, mean, std with ddof=1), t_test (scipy's ttest_ind: Student pooled-variance
          and two-sided by default, as the paper; Welch optional), size_heuristic_picks_mtl /
          heuristic_accuracy, average_pairwise, table1, table2
  beyond  adjust_pvalues (Holm, Benjamini-Hochberg), bootstrap_diff_ci, violation_ratio and
          aso_min_epsilon (almost stochastic order, Dror et al. 2019), t_test_power / seeds_needed
          (noncentral t), logistic_fit / crossover (P(MTL better) against log2 size ratio)

Shapes: a, b (n,) and (m,) are one method's scores over seeds; T targets, S supports, M samplers;
B bootstrap resamples; N observations. Scores are on the paper's x100 scale but nothing here cares.
Every random function takes an explicit `np.random.Generator`. Missing values are NaN.
"""
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

ALTERNATIVES = ("two-sided", "greater", "less")


# ---------------------------------------------------------------- per cell: aggregation and tests
def describe(x: np.ndarray) -> tuple[int, float, float]:
    """(n, mean, std) of x (n,); std is the sample std (ddof=1), NaN when n < 2; mean NaN when n = 0."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    mean = float(x.mean()) if n else float("nan")
    std = float(x.std(ddof=1)) if n >= 2 else float("nan")
    return n, mean, std


@dataclass(frozen=True)
class TTest:
    t: float
    p: float
    df: float


def t_test(a: np.ndarray, b: np.ndarray, welch: bool = False, alternative: str = "two-sided") -> TTest | None:
    """Two-sample t-test of mean(a) - mean(b); a (n,), b (m,): scipy.stats.ttest_ind underneath.

    H0: equal means. `alternative`: "two-sided" (the paper), "greater" (mean a > mean b) or "less".
    Student (default, the paper's test): pooled variance, df = n + m - 2. Welch: unequal variances,
    Welch-Satterthwaite df. Returns None when n < 2 or m < 2 (no test possible). Zero variance on
    both sides gives t = +-inf (p = 0) or, with equal means, NaN, as scipy does (its "nearly
    identical data" warning is silenced: the caller reads t).
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sps.ttest_ind(a, b, equal_var=not welch, alternative=alternative)
    return TTest(t=float(res.statistic), p=float(res.pvalue), df=float(res.df))


def adjust_pvalues(p: np.ndarray, method: str = "none") -> np.ndarray:
    """Adjusted p-values (N,) for a family of tests p (N,); NaN entries are left out of the family.

    "none": p unchanged. "holm" (Holm 1979, controls the family-wise error): with p sorted ascending,
    adj_(i) = max_{j<=i} min(1, (m - j + 1) p_(j)). "bh" (Benjamini-Hochberg 1995, controls the false
    discovery rate): adj_(i) = min_{j>=i} m p_(j) / j (<= p_(m) <= 1). m = number of non-NaN p; i, j from 1.
    A test is significant at level alpha when its adjusted p < alpha.
    """
    p = np.asarray(p, dtype=np.float64)
    if method not in ("none", "holm", "bh"):
        raise ValueError(f"correction must be none, holm or bh, got {method!r}")
    out = p.copy()
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if method == "none":
        return out
    order = np.argsort(p[ok])  # any order of ties: tied p get equal adjusted p
    ps = p[ok][order]  # (m,) ascending
    rank = np.arange(1, m + 1)
    if method == "holm":
        adj = np.maximum.accumulate(np.minimum(1.0, (m - rank + 1) * ps))
    else:
        adj = np.minimum.accumulate((m * ps / rank)[::-1])[::-1]
    back = np.empty(m)
    back[order] = adj
    out[ok] = back
    return out


# ---------------------------------------------------------------- the size heuristic and the tables
def size_heuristic_picks_mtl(target_size: np.ndarray, support_size: np.ndarray) -> np.ndarray:
    """(N,) bool: the paper's heuristic predicts MTL when the target has fewer training examples than
    the support, STILTs otherwise (equal sizes included)."""
    return np.asarray(target_size) < np.asarray(support_size)


def heuristic_accuracy(diff: np.ndarray, significant: np.ndarray, picks_mtl: np.ndarray) -> tuple[int, int, float]:
    """(n_significant, n_correct, accuracy) over significant cells only, as the paper (49/53 = 92.5%).

    diff (N,) = mean MTL - mean STILTs; significant, picks_mtl (N,) bool. A significant cell is
    correct when the better method (MTL if diff > 0) is the one picked. accuracy is NaN with no
    significant cell.
    """
    sig = np.asarray(significant, dtype=bool)
    correct = sig & ((np.asarray(diff) > 0) == np.asarray(picks_mtl, dtype=bool))
    n_sig, n_ok = int(sig.sum()), int(correct.sum())
    return n_sig, n_ok, (n_ok / n_sig if n_sig else float("nan"))


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """np.nanmean without the all-NaN warning (an all-NaN slice gives NaN)."""
    n = np.sum(~np.isnan(x), axis=axis)
    return np.where(n > 0, np.nansum(x, axis=axis) / np.maximum(n, 1), np.nan)


def average_pairwise(mtl: np.ndarray, stilts: np.ndarray) -> np.ndarray:
    """(T,) per target, the mean over supports of max(MTL, STILTs) cell means: the authors' "average
    pairwise" (`best_max_df` in compare_method_matrices.py: np.maximum, which gives NaN where either
    method is missing, then a NaN-skipping mean, so a cell missing one method is left out).
    mtl, stilts (T, S) cell means, NaN where missing."""
    return _nanmean(np.maximum(np.asarray(mtl, dtype=np.float64), np.asarray(stilts, dtype=np.float64)), 1)


def table1(mtl: np.ndarray, stilts: np.ndarray, mtl_all: np.ndarray) -> np.ndarray:
    """The paper's Table 1, (T, 4): per target, the mean over supports of the cell means of MTL and of
    STILTs, the average pairwise (`average_pairwise`), and MTL-ALL. mtl, stilts (T, S) cell means
    (NaN where a cell is missing, e.g. the diagonal); mtl_all (T,)."""
    return np.stack([_nanmean(mtl, 1), _nanmean(stilts, 1), average_pairwise(mtl, stilts),
                     np.asarray(mtl_all, dtype=np.float64)], axis=1)


def table2(mtl_all: np.ndarray, mtl: np.ndarray, stilts: np.ndarray, picks_mtl: np.ndarray) -> np.ndarray:
    """The paper's Table 2, (T, M + 2): MTL-ALL per sampler mtl_all (T, M), then "Ave. S.H." = per
    target, the mean over supports of the cell mean of the method the size heuristic picks
    (picks_mtl (T, S) bool), then "Pairwise Oracle" = per target, the best cell mean over every
    (support, method in {MTL, STILTs}). mtl, stilts (T, S) cell means, NaN where missing."""
    mtl, stilts = np.asarray(mtl, dtype=np.float64), np.asarray(stilts, dtype=np.float64)
    picked = np.where(picks_mtl, mtl, stilts)  # (T, S)
    both = np.concatenate([mtl, stilts], axis=1)  # (T, 2S)
    oracle = np.where(np.isnan(both).all(1), np.nan, np.where(np.isnan(both), -np.inf, both).max(1, initial=-np.inf))
    mtl_all = np.asarray(mtl_all, dtype=np.float64)
    mtl_all = mtl_all[:, None] if mtl_all.ndim == 1 else mtl_all  # (T, M)
    return np.concatenate([mtl_all, _nanmean(picked, 1)[:, None], oracle[:, None]], axis=1)


# ---------------------------------------------------------------- beyond the paper: resampling
def bootstrap_diff_ci(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n_boot: int = 10000,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(a) - mean(b): each side resampled with replacement on its own
    (a (n,), b (m,) independent seeds), n_boot times. Returns (low, high)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("bootstrap_diff_ci needs at least one score on each side")
    ra = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(1)  # (B,)
    rb = b[rng.integers(0, b.size, size=(n_boot, b.size))].mean(1)  # (B,)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(ra - rb, [tail, 1.0 - tail])
    return float(lo), float(hi)


def _quantile_grid(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The empirical quantile functions of samples of sizes n and m are step functions, constant on
    the intervals between the breakpoints {i/n} U {j/m}; returns the interval widths (K,) and, for
    each interval, the index into the sorted samples (K,), (K,) (Q(t) = x_sorted[ceil(n t) - 1])."""
    edges = np.unique(np.concatenate([[0.0], np.arange(1, n + 1) / n, np.arange(1, m + 1) / m]))
    mid = (edges[:-1] + edges[1:]) / 2  # no midpoint is a breakpoint, so ceil(n mid) - 1 = floor(n mid)
    return np.diff(edges), np.floor(n * mid).astype(int), np.floor(m * mid).astype(int)


def violation_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """epsilon_W2 of Dror et al. (2019), eq. 4-5: the share of the squared quantile distance where a
    is worse than b, integral over t of max(Qb(t) - Qa(t), 0)^2 / integral of (Qb(t) - Qa(t))^2,
    computed exactly on the empirical quantile functions (no dt grid). 0 = a stochastically dominates
    b; 1 = b dominates a; NaN where both distributions are identical. a (..., n), b (..., m) with
    the same leading (batch) shape; returns that shape."""
    a, b = np.sort(np.asarray(a, dtype=np.float64), -1), np.sort(np.asarray(b, dtype=np.float64), -1)
    width, ia, ib = _quantile_grid(a.shape[-1], b.shape[-1])
    d = b[..., ib] - a[..., ia]  # (..., K): Qb - Qa on each interval
    total = (width * d**2).sum(-1)
    viol = (width * np.maximum(d, 0.0) ** 2).sum(-1)
    with np.errstate(invalid="ignore"):  # viol <= total: only identical samples divide, 0 / 0 = NaN
        return viol / total


def aso_min_epsilon(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n_boot: int = 1000,
                    confidence: float = 0.05) -> float:
    """Almost stochastic order (Dror, Shlomov and Reichart 2019, "Deep Dominance"): epsilon_min, an
    upper confidence bound on the violation ratio of "a is better than b". a (n,), b (m,).

    eps_min = eps + z_(1 - confidence) * sigma / sqrt(n m / (n + m)), where sigma is the std over
    n_boot bootstrap resamples (each side resampled with replacement at its own size) of
    sqrt(n m / (n + m)) (eps* - eps); with resamples of the original sizes this is
    eps + z * std(eps*). Clipped to [0, 1]. Read it as: eps_min < 0.5 -> a is almost stochastically
    better than b (the paper's threshold; smaller is stronger); 0 -> a dominates outright.
    NaN when the two samples are identical. H1: a better than b (one-sided by construction).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    eps = float(violation_ratio(a, b))
    if np.isnan(eps):
        return float("nan")
    ra = a[rng.integers(0, a.size, size=(n_boot, a.size))]  # (B, n)
    rb = b[rng.integers(0, b.size, size=(n_boot, b.size))]  # (B, m)
    boot = violation_ratio(ra, rb)  # (B,), NaN where a resample pair is identical
    sigma = float(np.nanstd(boot)) if np.any(~np.isnan(boot)) else 0.0
    return float(np.clip(eps + sps.norm.ppf(1.0 - confidence) * sigma, 0.0, 1.0))


# ---------------------------------------------------------------- beyond the paper: power
def t_test_power(diff: float, std: float, n: int, alpha: float) -> float:
    """Power of the two-sided Student t-test with n seeds per method to detect a true difference
    `diff` when both methods' scores have standard deviation `std`: P(|T| > t_(1 - alpha/2, 2n - 2))
    with T noncentral t, df = 2n - 2, noncentrality diff / (std sqrt(2 / n))."""
    df = 2 * n - 2
    crit = sps.t.ppf(1.0 - alpha / 2.0, df)
    if std == 0:
        return 1.0 if diff != 0 else alpha
    nc = abs(diff) / (std * np.sqrt(2.0 / n))
    upper, lower = sps.nct.sf(crit, df, nc), sps.nct.cdf(-crit, df, nc)
    # scipy's nct returns NaN far in a tail for large nc; there the tail is 0 (lower) or 1 (upper)
    upper = (1.0 if nc > crit else 0.0) if np.isnan(upper) else upper
    return float(upper + (0.0 if np.isnan(lower) else lower))


def seeds_needed(diff: float, std: float, alpha: float, power: float = 0.8, max_n: int = 1000) -> int | None:
    """Smallest number of seeds per method (>= 2) at which t_test_power >= power; None if diff is 0
    or more than max_n seeds would be needed. Power grows with n, so a bisection finds it."""
    if diff == 0 or t_test_power(diff, std, max_n, alpha) < power:
        return None
    lo, hi = 2, max_n  # invariant: power(hi) >= target
    if t_test_power(diff, std, lo, alpha) >= power:
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if t_test_power(diff, std, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi


# ---------------------------------------------------------------- beyond the paper: logistic fit
@dataclass(frozen=True)
class LogisticFit:
    """P(y = 1) = 1 / (1 + exp(-(coef[0] + coef[1] x))); cov (2, 2) the inverse Fisher information.
    converged is False (coef and cov NaN) when the data are separable (no finite maximum) or one class."""
    coef: np.ndarray
    cov: np.ndarray
    converged: bool
    n_iter: int
    reason: str = ""


def logistic_fit(x: np.ndarray, y: np.ndarray, max_iter: int = 100, tol: float = 1e-10) -> LogisticFit:
    """Maximum-likelihood logistic regression of y (N,) in {0, 1} on x (N,), by Newton's method
    (= IRLS) with step halving. A 1-D design has a finite maximum only if the classes overlap, which
    is checked first."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    nan2 = np.full(2, np.nan)
    nan22 = np.full((2, 2), np.nan)
    if y.min() == y.max():
        return LogisticFit(nan2, nan22, False, 0, "one class only")
    x0, x1 = x[y == 0], x[y == 1]
    if x0.max() <= x1.min() or x1.max() <= x0.min():
        return LogisticFit(nan2, nan22, False, 0, "classes separable: no finite fit")
    X = np.stack([np.ones_like(x), x], axis=1)  # (N, 2)

    def nll(beta):  # negative log-likelihood, stable: log(1 + e^eta) - y eta
        eta = X @ beta
        return float(np.sum(np.logaddexp(0.0, eta) - y * eta))

    beta = np.zeros(2)
    for it in range(1, max_iter + 1):
        prob = 1.0 / (1.0 + np.exp(-(X @ beta)))  # (N,)
        grad = X.T @ (prob - y)  # (2,)
        hess = X.T @ (X * (prob * (1 - prob))[:, None])  # (2, 2)
        step = np.linalg.solve(hess, grad)
        f0, scale = nll(beta), 1.0
        while nll(beta - scale * step) > f0 and scale > 1e-8:
            scale /= 2
        beta = beta - scale * step
        if np.max(np.abs(scale * step)) < tol:
            break
    prob = 1.0 / (1.0 + np.exp(-(X @ beta)))
    cov = np.linalg.inv(X.T @ (X * (prob * (1 - prob))[:, None]))
    return LogisticFit(beta, cov, it < max_iter, it)


def crossover(fit: LogisticFit, level: float = 0.95) -> tuple[float, float, float]:
    """x where P(y = 1) = 1/2, i.e. -coef[0] / coef[1], with a delta-method interval at `level`:
    var = (var0 + x^2 var1 + 2 x cov01) / coef1^2. Returns (x, low, high); NaN without a fit."""
    if not fit.converged or fit.coef[1] == 0:
        return float("nan"), float("nan"), float("nan")
    b0, b1 = fit.coef
    xc = -b0 / b1
    var = (fit.cov[0, 0] + xc**2 * fit.cov[1, 1] + 2 * xc * fit.cov[0, 1]) / b1**2
    half = sps.norm.ppf(0.5 + level / 2) * np.sqrt(max(var, 0.0))
    return float(xc), float(xc - half), float(xc + half)
