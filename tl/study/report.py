"""The paper's analysis of seed scores and its Markdown / CSV / JSON outputs: Figure 1's cells, the
size heuristic and Tables 1-2 of Weller et al. (2022); beyond it, bootstrap CIs, almost stochastic
order, power and a logistic fit of P(MTL better) against the size ratio (README.md "Statistics").
Imports tl.stats (the general statistics), tl.runs (atomic writes), tl.train (arg) and tl.study.scores (the Score rows).

`analyse` takes the Score rows of ONE protocol and returns one JSON-ready dict. The matrix compares
`stilts` with the pairwise MTL of the protocol's plans (MATRIX_MTL; the size experiment SIZE_MTL;
plain `mtl` where a table lacks it). Table 1's MTL-ALL is `mtl_all:size`, as the authors'
compare_method_matrices.py read mtl_all_best_results_size.csv; Table 2 has a column per `mtl_all`
sampler. The bootstrap and ASO draw from one Generator seeded by `settings.seed`, in cell order.
"""
import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from tl import stats
from tl.runs import write_file
from tl.train import arg
from tl.study.scores import PROTOCOLS, Score, select_protocol, support_factor, target_train_size

SAMPLER_ORDER = ("uniform", "size", "dynamic", "dynamic-softmax")  # Table 2's column order
MATRIX_MTL = {"tl": "mtl", "authors": "mtl:uniform"}  # pairwise MTL of each protocol's plans
SIZE_MTL = {"tl": "mtl", "authors": "mtl:dynamic-softmax"}  # ... and of its size plan
TABLE1_MTL_ALL = "mtl_all:size"  # compare_method_matrices.py: mtl_all_best_results_size.csv
MIN_CELLS_FOR_CROSSOVER = 10  # fewer significant cells: the fit is shown, its crossover is not
PASSES = "passes MTL / STILTs"  # the target's training passes under each method


@dataclass(frozen=True)
class StatsSettings:
    alpha: float = arg(0.1, "significance level (0.1 as in the authors' code; the paper used no correction)")
    welch: bool = arg(False, "Welch's unequal-variance t-test instead of Student's pooled-variance test (the paper's)")
    correction: str = arg("none", "multiple-comparison correction over the matrix's cells",
                          choices=("none", "holm", "bh"))
    n_boot: int = arg(10000, "bootstrap resamples for each cell's 95%% CI of MTL - STILTs")
    aso_boot: int = arg(1000, "bootstrap resamples for almost stochastic order's eps_min")
    seed: int = arg(0, "seed of the np.random.Generator behind the bootstrap and ASO")
    power: float = arg(0.0, "seeds per method needed to detect this difference (points) with 80%% power "
                             "at --alpha and each cell's pooled std; 0 = skip")
    protocol: str = arg("", "analyse only the runs of this protocol; needed when the scores hold both (a record "
                            "or table without a protocol is tl)", choices=PROTOCOLS)

    def __post_init__(self):
        if not 0 < self.alpha < 1:
            raise ValueError(f"--alpha must be in (0, 1), got {self.alpha}")
        if self.correction not in ("none", "holm", "bh"):
            raise ValueError(f"--correction must be none, holm or bh, got {self.correction!r}")
        if self.n_boot < 1 or self.aso_boot < 1:
            raise ValueError("--n-boot and --aso-boot must be positive")
        if self.power < 0:
            raise ValueError(f"--power must be >= 0, got {self.power}")
        if self.protocol not in ("", *PROTOCOLS):
            raise ValueError(f"--protocol must be tl or authors, got {self.protocol!r}")

    @property
    def test_name(self) -> str:
        return ("Welch two-sample t-test (unequal variances)" if self.welch
                else "Student two-sample t-test (pooled variance)") + ", two-sided"


def _num(x):
    """float for JSON, None for NaN/inf/None."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _arr(x) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in x], dtype=np.float64)


def order_tasks(tasks, sizes: dict) -> list[str]:
    """Largest training set first, as the paper's figure; tasks of unknown size last, by name."""
    return sorted(set(tasks), key=lambda t: (sizes.get(t) is None, -(sizes.get(t) or 0), t))


def _size_of(task: str, sizes: dict) -> int:
    """Size of a task or of a '+'-joined support (the sum), ValueError saying how to give it."""
    missing = [p for p in task.split("+") if p not in sizes]
    if missing:
        raise ValueError(f"no training size for task {missing[0]!r}: it is not in the task registry and no run "
                         f"record gives it; pass --sizes FILE.json with {{\"{missing[0]}\": N}}")
    return sum(sizes[p] for p in task.split("+"))


def compare(mtl: np.ndarray, stilts: np.ndarray, settings: StatsSettings, rng: np.random.Generator) -> dict:
    """Everything about MTL (n,) vs STILTs (m,) seed scores except the correction and heuristic."""
    n_m, mean_m, std_m = stats.describe(mtl)
    n_s, mean_s, std_s = stats.describe(stilts)
    out = dict(n_mtl=n_m, n_stilts=n_s, mean_mtl=_num(mean_m), std_mtl=_num(std_m), mean_stilts=_num(mean_s),
               std_stilts=_num(std_s), diff=_num(mean_m - mean_s), t=None, p=None, note="",
               ci_low=None, ci_high=None, aso_mtl=None, aso_stilts=None, pooled_std=None, seeds_needed=None)
    test = stats.t_test(mtl, stilts, welch=settings.welch)
    if test is None or math.isnan(test.t):
        out["note"] = "no test possible (" + ("fewer than 2 seeds on a side)" if test is None else "all scores equal)")
        return out
    out.update(t=_num(test.t), p=_num(test.p))
    if math.isinf(test.t):
        out["note"] = "zero variance on both sides: t infinite"
    out["ci_low"], out["ci_high"] = stats.bootstrap_diff_ci(mtl, stilts, rng, settings.n_boot)
    out["aso_mtl"] = _num(stats.aso_min_epsilon(mtl, stilts, rng, settings.aso_boot))
    out["aso_stilts"] = _num(stats.aso_min_epsilon(stilts, mtl, rng, settings.aso_boot))
    out["pooled_std"] = math.sqrt(((n_m - 1) * std_m**2 + (n_s - 1) * std_s**2) / (n_m + n_s - 2))
    if settings.power > 0:
        out["seeds_needed"] = stats.seeds_needed(settings.power, out["pooled_std"], settings.alpha)
    return out


def _scores(rows: list[Score]) -> np.ndarray:
    return np.array([r.score for r in rows], dtype=np.float64)


def _mean_passes(rows: list[Score]):
    """The target's mean training passes over the seeds that report them; None when none does."""
    known = [r.passes for r in rows if r.passes is not None]
    return float(np.mean(known)) if known else None


def analyse(rows: list[Score], settings: StatsSettings, sizes: dict[str, int], source: str = "") -> dict:
    """The whole analysis as a JSON-ready dict (see the module docstring); `source` says where the
    rows came from, for the report. ValueError when the rows mix protocols and none is chosen."""
    rows, protocol = select_protocol(rows, settings.protocol)
    rng = np.random.default_rng(settings.seed)
    main, size = [r for r in rows if not r.in_size_experiment], [r for r in rows if r.in_size_experiment]
    groups = defaultdict(list)  # (target, support, method) -> rows ordered by seed, whatever the file order
    for r in sorted(main, key=lambda r: r.seed):
        groups[(r.target, r.support, r.method)].append(r)
    mtl_method, size_mtl = (d[protocol] if any(r.method == d[protocol] for r in part) else "mtl"
                            for d, part in ((MATRIX_MTL, main), (SIZE_MTL, size)))
    pairs = {(t, s) for (t, s, m) in groups if m in (mtl_method, "stilts")}
    targets = order_tasks({t for t, _ in pairs} | {t for (t, _, m) in groups if m.startswith("mtl_all")}, sizes)
    supports = order_tasks({s for _, s in pairs}, sizes)
    cells = []
    for t, s in ((t, s) for t in targets for s in supports if (t, s) in pairs):
        mtl, stilts = groups.get((t, s, mtl_method), []), groups.get((t, s, "stilts"), [])
        cells.append(dict(target=t, support=s, **compare(_scores(mtl), _scores(stilts), settings, rng),
                          passes_mtl=_mean_passes(mtl), passes_stilts=_mean_passes(stilts),
                          size_target=_size_of(t, sizes), size_support=_size_of(s, sizes)))
    return dict(protocol=protocol, mtl_method=mtl_method, size_mtl_method=size_mtl, source=source, n_scores=len(rows),
                settings={**asdict(settings), "test": settings.test_name, "std": "sample std, ddof=1"},
                sizes=dict(sorted(sizes.items())), targets=targets, supports=supports, cells=cells,
                summary=_judge(cells, settings), tables=_tables(cells, groups, targets, supports, sizes),
                logistic=_logistic(cells),
                size_experiment=_size_experiment(size, size_mtl, settings, sizes, rng))


def size_heuristic_picks_mtl(target_size: np.ndarray, support_size: np.ndarray) -> np.ndarray:
    """(N,) bool: the paper's size heuristic picks MTL when the target is smaller than the support."""
    return np.asarray(target_size) < np.asarray(support_size)


def heuristic_accuracy(diff: np.ndarray, significant: np.ndarray, picks_mtl: np.ndarray) -> tuple[int, int, float]:
    """(n_significant, n_correct, accuracy) over the significant cells (the paper: 49/53 = 92.5%); a cell
    is correct when the better method (MTL where diff = MTL - STILTs > 0) is the one picked."""
    sig = np.asarray(significant, dtype=bool)
    correct = sig & ((np.asarray(diff) > 0) == np.asarray(picks_mtl, dtype=bool))
    n_sig, n_ok = int(sig.sum()), int(correct.sum())
    return n_sig, n_ok, (n_ok / n_sig if n_sig else float("nan"))


def _judge(cells: list[dict], settings: StatsSettings) -> dict:
    """The summary; marks each cell's adjusted p, significance and the size heuristic's verdict in place."""
    p = _arr(c["p"] for c in cells)
    p_adj = stats.adjust_pvalues(p, settings.correction)
    picks = size_heuristic_picks_mtl([c["size_target"] for c in cells], [c["size_support"] for c in cells])
    for c, pa, pick in zip(cells, p_adj, picks):
        c["p_adjusted"] = _num(pa)
        c["significant"] = bool(pa < settings.alpha) if not np.isnan(pa) else False
        c["predicted"] = "mtl" if pick else "stilts"
        c["correct"] = ((c["diff"] > 0) == bool(pick)) if c["significant"] else None
    sig = np.array([c["significant"] for c in cells], dtype=bool)
    diff = _arr(c["diff"] for c in cells)
    n_sig, n_ok, acc = heuristic_accuracy(diff, sig, picks)
    return dict(n_cells=len(cells), n_tested=int((~np.isnan(p)).sum()), n_significant=n_sig, n_correct=n_ok,
                accuracy=_num(acc), n_mtl_better=int((sig & (diff > 0)).sum()),
                n_stilts_better=int((sig & (diff < 0)).sum()))


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """np.nanmean without the all-NaN warning (an all-NaN slice gives NaN)."""
    n = np.sum(~np.isnan(x), axis=axis)
    return np.where(n > 0, np.nansum(x, axis=axis) / np.maximum(n, 1), np.nan)


def average_pairwise(mtl: np.ndarray, stilts: np.ndarray) -> np.ndarray:
    """(T,): per target, the mean over supports of max(MTL, STILTs) of the cell means (T, S), a cell
    missing either left out: the authors' "average pairwise" (compare_method_matrices.py `best_max_df`)."""
    return _nanmean(np.maximum(np.asarray(mtl, dtype=np.float64), np.asarray(stilts, dtype=np.float64)), 1)


def table1(mtl: np.ndarray, stilts: np.ndarray, mtl_all: np.ndarray) -> np.ndarray:
    """The paper's Table 1 (T, 4): per target, the mean over supports of the MTL and of the STILTs cell
    means (T, S; NaN where missing), the average pairwise, and MTL-ALL mtl_all (T,)."""
    return np.stack([_nanmean(mtl, 1), _nanmean(stilts, 1), average_pairwise(mtl, stilts),
                     np.asarray(mtl_all, dtype=np.float64)], axis=1)


def table2(mtl_all: np.ndarray, mtl: np.ndarray, stilts: np.ndarray, picks_mtl: np.ndarray) -> np.ndarray:
    """The paper's Table 2 (T, M + 2): MTL-ALL per sampler mtl_all (T, M) or (T,); "Ave. S.H.", the mean
    over supports of the cell mean the size heuristic picks (picks_mtl (T, S)); "Pairwise Oracle", the
    best cell mean of either method. mtl, stilts (T, S), NaN where missing."""
    mtl, stilts = np.asarray(mtl, dtype=np.float64), np.asarray(stilts, dtype=np.float64)
    picked = np.where(picks_mtl, mtl, stilts)  # (T, S)
    oracle = np.fmax.reduce(np.concatenate([mtl, stilts], axis=1), axis=1, initial=np.nan)  # (T,) NaN: no cell
    mtl_all = np.asarray(mtl_all, dtype=np.float64)
    mtl_all = mtl_all[:, None] if mtl_all.ndim == 1 else mtl_all  # (T, M)
    return np.concatenate([mtl_all, _nanmean(picked, 1)[:, None], oracle[:, None]], axis=1)


def _table(columns: list[str], targets: list[str], values: np.ndarray) -> dict:
    """{"columns", "rows", "note"}: one row per target then "Average" (per column, the mean over the
    targets with a value); the note says so when the columns average over different targets."""
    rows = [dict(target=t, **{c: _num(v) for c, v in zip(columns[1:], vals)}) for t, vals in zip(targets, values)]
    have = [int((~np.isnan(col)).sum()) for col in values.T]
    rows.append(dict(target="Average", **{c: _num(v) for c, v in zip(columns[1:], _nanmean(values, 0))}))
    same = len({frozenset(np.flatnonzero(~np.isnan(col))) for col in values.T}) <= 1
    note = "" if same else ("The Average row averages each column over the targets that have a value, which differ: "
                            + ", ".join(f"{c} {n} of {len(targets)}" for c, n in zip(columns[1:], have)) + ".")
    return dict(columns=columns, rows=rows, note=note)


def _tables(cells, groups, targets, supports, sizes) -> dict:
    T, S = len(targets), len(supports)
    ti, si = {t: i for i, t in enumerate(targets)}, {s: j for j, s in enumerate(supports)}
    mtl, stilts = np.full((T, S), np.nan), np.full((T, S), np.nan)  # (T, S) cell means
    picks = np.zeros((T, S), dtype=bool)
    for c in cells:
        i, j = ti[c["target"]], si[c["support"]]
        mtl[i, j], stilts[i, j] = _arr([c["mean_mtl"], c["mean_stilts"]])
        picks[i, j] = c["predicted"] == "mtl"
    samplers = {m.partition(":")[2] or "dynamic" for (_, _, m) in groups if m.startswith("mtl_all")}
    samplers = sorted(samplers, key=lambda s: (SAMPLER_ORDER.index(s) if s in SAMPLER_ORDER else 99, s))

    def mtl_all_mean(t, method):
        x = groups.get((t, "", method))
        return np.nan if not x else _scores(x).mean()

    t1 = table1(mtl, stilts, np.array([mtl_all_mean(t, TABLE1_MTL_ALL) for t in targets]))
    methods = ["mtl_all" if s == "dynamic" else f"mtl_all:{s}" for s in samplers]
    t2 = table2(np.array([[mtl_all_mean(t, m) for m in methods] for t in targets]).reshape(T, len(samplers)),
                mtl, stilts, picks)
    singles = [dict(target=t, **dict(zip(("n", "mean", "std"), stats.describe(_scores(groups[(t, "", "single")])))))
               for t in order_tasks({t for (t, _, m) in groups if m == "single"}, sizes)]
    return dict(table1=_table(["target", "MTL", "STILTs", "Average pairwise", "MTL-ALL (size)"], targets, t1),
                table2=_table(["target", *[f"MTL-ALL ({s})" for s in samplers], "Ave. S.H.", "Pairwise Oracle"],
                              targets, t2),
                singles=[{k: (_num(v) if k in ("mean", "std") else v) for k, v in r.items()} for r in singles])


def _logistic(cells) -> dict:
    """P(MTL better) ~ log2(support size / target size) over significant cells; the crossover only when
    MIN_CELLS_FOR_CROSSOVER cells identify it (inside the observed ratios, a finite interval)."""
    sig = [c for c in cells if c["significant"]]
    x = np.array([math.log2(c["size_support"] / c["size_target"]) for c in sig])
    y = np.array([c["diff"] > 0 for c in sig], dtype=float)
    out = dict(n=len(sig), n_mtl_better=int(y.sum()), intercept=None, slope=None, converged=False, reason="",
               warning="", crossover_log2_ratio=None, crossover_interval=None, crossover_ratio=None)
    if len(set(x.tolist())) < 2:
        out["reason"] = "fewer than 2 distinct size ratios among the significant cells: slope not identified"
        return out
    fit = stats.logistic_fit(x, y)
    out.update(converged=fit.converged, reason=fit.reason)
    if not fit.converged:
        return out
    xc, lo, hi = stats.crossover(fit)
    out.update(intercept=float(fit.coef[0]), slope=float(fit.coef[1]))
    if len(sig) < MIN_CELLS_FOR_CROSSOVER:
        out["warning"] = f"only {len(sig)} significant cells (< {MIN_CELLS_FOR_CROSSOVER}): too few for a crossover"
    elif not (x.min() <= xc <= x.max() and math.isfinite(lo) and math.isfinite(hi)):
        out["warning"] = "crossover not identified (outside the observed size ratios, or an unbounded interval)"
    else:
        out.update(crossover_log2_ratio=_num(xc), crossover_interval=[_num(lo), _num(hi)],
                   crossover_ratio=_num(2.0**xc))
    return out


def _size_experiment(rows, mtl_method, settings, sizes, rng) -> list[dict]:
    """Figure 2's points: MTL vs STILTs per (target, target size, support, K), no correction."""
    groups = defaultdict(lambda: ([], []))
    for r in sorted(rows, key=lambda r: r.seed):
        if r.method in (mtl_method, "stilts"):
            key = (r.target, target_train_size(r, sizes) or 0, r.support, round(support_factor(r, sizes), 6))
            groups[key][0 if r.method == mtl_method else 1].append(r)
    points = []
    for (t, n_t, s, k) in sorted(groups, key=lambda g: (g[0], -g[1], g[2], g[3])):
        mtl, stilts = groups[(t, n_t, s, k)]
        point = dict(target=t, target_size=n_t, support=s, k=k, **compare(_scores(mtl), _scores(stilts), settings, rng),
                     passes_mtl=_mean_passes(mtl), passes_stilts=_mean_passes(stilts))
        point["significant"] = point["p"] is not None and point["p"] < settings.alpha
        points.append(point)
    return points


# ---------------------------------------------------------------- Markdown
def _f(x, fmt=".2f") -> str:
    return "–" if x is None else format(x, fmt)


def k_label(k: float) -> str:
    """1/3 -> "1/3", 2.0 -> "2", 0.37 -> "0.37": K as the paper writes it."""
    f = Fraction(k).limit_denominator(12)
    return str(f) if abs(float(f) - k) < 1e-6 else f"{k:.3g}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _compared(c: dict) -> list[str]:
    """The columns a cell and a size-experiment point share: MTL, STILTs, diff, p (or why none)."""
    return [*(f"{_f(c['mean_' + m])} ± {_f(c['std_' + m])} ({c['n_' + m]})" for m in ("mtl", "stilts")),
            _f(c["diff"]), c["note"] if c["p"] is None else _f(c["p"], ".4f")]


def _passes(c: dict) -> str:
    return f"{_f(c['passes_mtl'], '.3g')} / {_f(c['passes_stilts'], '.3g')}"


def _md_cells(a: dict) -> list[str]:
    power = a["settings"]["power"]
    header = ["target", "support", "MTL", "STILTs", "diff", "p", "t", "p adj", "sig", "pred", "ok",
              "95% CI (bootstrap)", "ε_min MTL>STILTs", "ε_min STILTs>MTL", PASSES] + (["seeds"] if power else [])
    rows = []
    for c in a["cells"]:
        ci = "–" if c["ci_low"] is None else f"[{c['ci_low']:.2f}, {c['ci_high']:.2f}]"
        seeds = "–" if c["pooled_std"] is None else (">1000" if c["seeds_needed"] is None else str(c["seeds_needed"]))
        ok = {None: "", True: "yes", False: "**no**"}[c["correct"]]
        rows.append([c["target"], c["support"], *_compared(c), _f(c["t"]), _f(c["p_adjusted"], ".4f"),
                     "yes" if c["significant"] else "", c["predicted"], ok, ci, _f(c["aso_mtl"]), _f(c["aso_stilts"]),
                     _passes(c)] + ([seeds] if power else []))
    out = [f"## Cells (MTL − STILTs), protocol {a['protocol']}, MTL = {a['mtl_method']}", "",
           _md_table(header, rows), "",
           "Cells show mean ± std (n seeds). ε_min < 0.5: the first method is almost stochastically better "
           "(Dror et al. 2019); smaller is stronger. passes: the target's training passes (examples seen / its "
           "train size), mean over seeds; – when the scores do not say."]
    if power:
        out += [f"seeds: seeds per method for 80% power to detect a {power} point difference at alpha "
                f"{a['settings']['alpha']} with the cell's pooled std (noncentral t)."]
    return out


def _md_tables(a: dict) -> list[str]:
    out = []
    for key, title in (("table1", "Table 1: mean over supports"), ("table2", "Table 2: MTL-ALL vs pairwise")):
        tab, name = a["tables"][key], f"## {title} (protocol {a['protocol']})"
        rows = [[r["target"], *(_f(r[c]) for c in tab["columns"][1:])] for r in tab["rows"]]
        out += ["", name, "", _md_table(tab["columns"], rows)]
        out += ["", tab["note"]] if tab["note"] else []
    out += ["", "Average pairwise: per target, the mean over supports of the better of the MTL and STILTs cell "
            "means (cells with both). MTL-ALL (size): the size-sampled MTL-ALL run, as the authors' Table 1."]
    if a["tables"]["singles"]:
        out += ["", f"## Single-task baselines (protocol {a['protocol']})", "",
                _md_table(["target", "mean ± std (n)"], [[r["target"], f"{_f(r['mean'])} ± {_f(r['std'])} ({r['n']})"]
                                                         for r in a["tables"]["singles"]])]
    return out


def _md_logistic(lg: dict, protocol: str) -> list[str]:
    out = ["", f"## P(MTL better) against log2(support size / target size), protocol {protocol}", ""]
    if not lg["converged"]:
        return out + [f"No fit ({lg['n']} significant cells): {lg['reason']}."]
    out += [f"Logistic fit over {lg['n']} significant cells: logit P = {lg['intercept']:.3f} + {lg['slope']:.3f} x."]
    if lg["warning"]:
        return out + [f"**Warning**: {lg['warning']}."]
    lo, hi = lg["crossover_interval"]
    return out + [f"Crossover (P = 1/2) at x = {lg['crossover_log2_ratio']:.3f} (95% delta-method interval "
                  f"[{_f(lo, '.3f')}, {_f(hi, '.3f')}]), i.e. support/target size ratio {lg['crossover_ratio']:.3g}."]


def render_markdown(a: dict) -> str:
    """The report: settings, heuristic accuracy, the cells, Tables 1-2, the beyond-the-paper results;
    every heading names the protocol."""
    st, sm = a["settings"], a["summary"]
    acc = "–" if sm["accuracy"] is None else f"{100 * sm['accuracy']:.1f}%"
    out = [f"# MTL vs STILTs: statistics, protocol {a['protocol']}", "",
           f"Test: {st['test']}; alpha = {st['alpha']}; correction: {st['correction']}; std: {st['std']}. "
           f"Bootstrap and ASO seed {st['seed']}. Protocol: {a['protocol']} (docs/PROTOCOL.md).", ""]
    if a["source"]:
        out += [f"Data: {a['n_scores']} scores from {a['source']}.", ""]
    out += [f"**Size heuristic** (MTL when the target is smaller than the support): {sm['n_correct']} of "
            f"{sm['n_significant']} significant cells predicted correctly ({acc}); {sm['n_cells']} cells, "
            f"{sm['n_tested']} tested, MTL better in {sm['n_mtl_better']}, STILTs better in {sm['n_stilts_better']}.",
            ""]
    out += _md_cells(a) + _md_tables(a) + _md_logistic(a["logistic"], a["protocol"])
    if a["size_experiment"]:
        rows = [[f"{p['target']} ({p['target_size']})", p["support"], k_label(p["k"]), *_compared(p),
                 "yes" if p["significant"] else "", _passes(p)] for p in a["size_experiment"]]
        out += ["", f"## Size experiment (Figure 2): support subsampled to K × target size, protocol {a['protocol']}, "
                f"MTL = {a['size_mtl_method']}",
                "", _md_table(["target (n)", "support", "K", "MTL", "STILTs", "diff", "p", "sig", PASSES], rows)]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- files
def _csv(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: ("" if r.get(k) is None else r[k]) for k in columns} for r in rows])
    return buf.getvalue()


def to_json(a: dict) -> str:
    return json.dumps(a, indent=1, allow_nan=False)


def write_outputs(a: dict, out_dir) -> list[Path]:
    """report.md, then cells, size_experiment, table1, table2 and singles .csv where they have rows;
    every CSV row is led by the protocol."""
    out_dir = Path(out_dir)
    written = [write_file(out_dir / "report.md", render_markdown(a))]
    tables = {"cells": a["cells"], "size_experiment": a["size_experiment"], "table1": a["tables"]["table1"]["rows"],
              "table2": a["tables"]["table2"]["rows"], "singles": a["tables"]["singles"]}
    for name, rows in tables.items():
        if rows:
            rows = [dict(protocol=a["protocol"], **r) for r in rows]
            written.append(write_file(out_dir / f"{name}.csv", _csv(list(rows[0]), rows)))
    return written
