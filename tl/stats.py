"""Statistics over seed scores: pure functions over numpy arrays, nothing read or written here.
Library file, copyable alone: it imports only numpy and scipy (no tl file).

The paper (Weller, Seppi and Gardner, ACL 2022) compares methods with describe and t_test (scipy's
Student test); beyond it: adjust_pvalues, bootstrap_diff_ci, almost stochastic order (violation_ratio,
aso_min_epsilon; Dror et al. 2019), t_test_power / seeds_needed (noncentral t), logistic_fit / crossover.
Shapes: a (n,), b (m,) one method's scores over seeds; B bootstrap resamples; N observations.
Every random function takes an explicit `np.random.Generator`. Missing values are NaN.
"""
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


def describe(x: np.ndarray) -> tuple[int, float, float]:
    """(n, mean, std) of x (n,): the sample std (ddof=1), NaN when n < 2; mean NaN when n = 0."""
    x = np.asarray(x, dtype=np.float64)
    mean = float(x.mean()) if x.size else float("nan")
    return x.size, mean, float(x.std(ddof=1)) if x.size >= 2 else float("nan")


@dataclass(frozen=True)
class TTest:
    t: float
    p: float
    df: float


def t_test(a: np.ndarray, b: np.ndarray, welch: bool = False, alternative: str = "two-sided") -> TTest | None:
    """Student's (the paper's) or Welch's test of mean(a) - mean(b) by scipy.stats.ttest_ind; None
    when n < 2 or m < 2. H1 `alternative`: "two-sided" (the paper), "greater" (a > b) or "less".
    Zero variance on both sides gives t = +-inf or NaN, as scipy (its warning silenced: callers read t)."""
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be one of two-sided, greater, less, got {alternative!r}")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sps.ttest_ind(a, b, equal_var=not welch, alternative=alternative)
    return TTest(t=float(res.statistic), p=float(res.pvalue), df=float(res.df))


def adjust_pvalues(p: np.ndarray, method: str = "none") -> np.ndarray:
    """Adjusted p-values (N,) of the family p (N,), NaN left out: "none", "holm" (Holm 1979,
    family-wise error) or "bh" (Benjamini-Hochberg 1995, false discovery rate)."""
    p = np.asarray(p, dtype=np.float64)
    if method not in ("none", "holm", "bh"):
        raise ValueError(f"correction must be none, holm or bh, got {method!r}")
    out = p.copy()
    if method == "none":
        return out
    ok = ~np.isnan(p)
    m = int(ok.sum())
    order = np.argsort(p[ok])  # any order of ties: tied p get equal adjusted p
    ps = p[ok][order]  # (m,) ascending
    rank = np.arange(1, m + 1)
    if method == "holm":
        adj = np.maximum.accumulate(np.minimum(1.0, (m - rank + 1) * ps))
    else:
        adj = np.minimum.accumulate((m * ps / rank)[::-1])[::-1]
    out[np.flatnonzero(ok)[order]] = adj
    return out


def bootstrap_diff_ci(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n_boot: int = 10000,
                      level: float = 0.95) -> tuple[float, float]:
    """(low, high): percentile bootstrap CI of mean(a) - mean(b), each side resampled on its own."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("bootstrap_diff_ci needs at least one score on each side")
    ra = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(1)  # (B,)
    rb = b[rng.integers(0, b.size, size=(n_boot, b.size))].mean(1)  # (B,)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(ra - rb, [tail, 1.0 - tail])
    return float(lo), float(hi)


def violation_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """epsilon_W2 of Dror et al. (2019), eq. 4-5, exact on the empirical quantile functions: the
    share of the squared quantile distance where a is worse than b. 0: a dominates b; 1: b dominates
    a; NaN: identical samples. a (..., n), b (..., m); returns the leading (batch) shape."""
    a, b = np.sort(np.asarray(a, dtype=np.float64), -1), np.sort(np.asarray(b, dtype=np.float64), -1)
    n, m = a.shape[-1], b.shape[-1]
    # both quantile functions are constant between the breakpoints {i/n} U {j/m}; no midpoint of
    # two is a breakpoint, so Q(mid) = x_sorted[ceil(n mid) - 1] = x_sorted[floor(n mid)]
    edges = np.unique(np.concatenate([[0.0], np.arange(1, n + 1) / n, np.arange(1, m + 1) / m]))
    mid, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)  # (K,)
    d = b[..., np.floor(m * mid).astype(int)] - a[..., np.floor(n * mid).astype(int)]  # (..., K): Qb - Qa
    total = (width * d**2).sum(-1)
    viol = (width * np.maximum(d, 0.0) ** 2).sum(-1)
    with np.errstate(invalid="ignore"):  # viol <= total: only identical samples divide, 0 / 0 = NaN
        return viol / total


def aso_min_epsilon(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n_boot: int = 1000,
                    confidence: float = 0.05) -> float:
    """Almost stochastic order (Dror, Shlomov and Reichart 2019, "Deep Dominance"): eps_min, an upper
    confidence bound on the violation ratio of "a is better than b", eps + z_(1 - confidence) std(eps*)
    over bootstrap resamples, clipped to [0, 1]. < 0.5: a almost stochastically better; NaN: a == b."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    eps = float(violation_ratio(a, b))
    if np.isnan(eps):
        return float("nan")
    ra = a[rng.integers(0, a.size, size=(n_boot, a.size))]  # (B, n)
    rb = b[rng.integers(0, b.size, size=(n_boot, b.size))]  # (B, m)
    boot = violation_ratio(ra, rb)  # (B,), NaN where a resample pair is identical
    sigma = float(np.nanstd(boot)) if np.any(~np.isnan(boot)) else 0.0
    return float(np.clip(eps + sps.norm.ppf(1.0 - confidence) * sigma, 0.0, 1.0))


def t_test_power(diff: float, std: float, n: int, alpha: float) -> float:
    """Power of the two-sided Student t-test with n seeds per method against a true difference `diff`
    at standard deviation `std`: T noncentral t, df 2n - 2, noncentrality diff / (std sqrt(2 / n))."""
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
    """Fewest seeds per method (>= 2) with t_test_power >= power, by bisection (power grows with n);
    None if diff is 0 or more than max_n are needed."""
    if diff == 0 or t_test_power(diff, std, max_n, alpha) < power:
        return None
    lo, hi = 1, max_n  # the answer is in (lo, hi]: power(hi) >= target
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if t_test_power(diff, std, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi


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
    """Maximum-likelihood logistic regression of y (N,) in {0, 1} on x (N,): Newton (IRLS) with step
    halving. A 1-D design has a finite maximum only where the classes overlap."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x0, x1 = x[y == 0], x[y == 1]
    reason = ("one class only" if y.min() == y.max() else
              "classes separable: no finite fit" if x0.max() <= x1.min() or x1.max() <= x0.min() else "")
    if reason:
        return LogisticFit(np.full(2, np.nan), np.full((2, 2), np.nan), False, 0, reason)
    X = np.stack([np.ones_like(x), x], axis=1)  # (N, 2)

    def nll(beta):  # negative log-likelihood, stable: log(1 + e^eta) - y eta
        eta = X @ beta
        return float(np.sum(np.logaddexp(0.0, eta) - y * eta))

    def prob_and_fisher(beta):  # (N,), (2, 2)
        prob = 1.0 / (1.0 + np.exp(-(X @ beta)))
        return prob, X.T @ (X * (prob * (1 - prob))[:, None])

    beta = np.zeros(2)
    for it in range(1, max_iter + 1):
        prob, fisher = prob_and_fisher(beta)
        step = np.linalg.solve(fisher, X.T @ (prob - y))
        f0, scale = nll(beta), 1.0
        while nll(beta - scale * step) > f0 and scale > 1e-8:
            scale /= 2
        beta = beta - scale * step
        if np.max(np.abs(scale * step)) < tol:
            break
    return LogisticFit(beta, np.linalg.inv(prob_and_fisher(beta)[1]), it < max_iter, it)


def crossover(fit: LogisticFit, level: float = 0.95) -> tuple[float, float, float]:
    """(x, low, high): x = -coef[0] / coef[1] where P(y = 1) = 1/2, with a delta-method interval at
    `level`; NaN without a fit."""
    if not fit.converged or fit.coef[1] == 0:
        return float("nan"), float("nan"), float("nan")
    b0, b1 = fit.coef
    xc = -b0 / b1
    var = (fit.cov[0, 0] + xc**2 * fit.cov[1, 1] + 2 * xc * fit.cov[0, 1]) / b1**2
    half = sps.norm.ppf(0.5 + level / 2) * np.sqrt(max(var, 0.0))
    return float(xc), float(xc - half), float(xc + half)
