"""The paper's analysis assembled from seed scores, and its Markdown / CSV / JSON outputs.

`analyse(rows, settings, sizes)` takes `tl.scores.Score` rows and returns one JSON-ready dict:
  targets, supports  the matrix's rows and columns, largest training set first (the paper's order)
  cells           one per (target, support) of the main matrix: n, mean, std (ddof=1) of MTL and of
                  STILTs, diff = MTL - STILTs, t, p (None: no test possible), p_adjusted,
                  significant, predicted (the size heuristic: "mtl" when the target is smaller than
                  the support), correct (None where not significant); and beyond the paper: a
                  bootstrap 95% CI of diff, ASO eps_min both ways, seeds needed for --power.
  summary         n_cells, n_tested, n_significant, n_correct, accuracy (the paper: 49/53 = 92.5%)
  tables          table1 (per target: MTL, STILTs mean over supports, MTL-ALL), table2 (MTL-ALL per
                  sampler, Ave. S.H., Pairwise Oracle), singles (single-task baselines)
  logistic        P(MTL better) against log2(support size / target size) over significant cells
  size_experiment Figure 2's points: per (target, target size, support, K) the same comparison
The statistics themselves are the pure functions of `tl.stats`; this file only groups rows and
formats. Method names follow `tl.scores`: the matrix compares `mtl` (pairwise MTL with the default
dynamic sampler) against `stilts`; Table 1's MTL-ALL is `mtl_all` (dynamic); Table 2 has one column per
`mtl_all` sampler found. The bootstrap and ASO draw from one Generator seeded by `settings.seed`, in
cell order, so a report is reproducible.
"""
import csv
import io
import json
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from tl import stats
from tl.cli import arg
from tl.scores import Score, support_factor, target_train_size

SAMPLER_ORDER = ("uniform", "size", "dynamic")  # Table 2's column order in the paper


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

    def __post_init__(self):
        if not 0 < self.alpha < 1:
            raise ValueError(f"--alpha must be in (0, 1), got {self.alpha}")
        if self.correction not in ("none", "holm", "bh"):
            raise ValueError(f"--correction must be none, holm or bh, got {self.correction!r}")
        if self.n_boot < 1 or self.aso_boot < 1:
            raise ValueError("--n-boot and --aso-boot must be positive")
        if self.power < 0:
            raise ValueError(f"--power must be >= 0, got {self.power}")

    @property
    def test_name(self) -> str:
        return ("Welch two-sample t-test (unequal variances)" if self.welch
                else "Student two-sample t-test (pooled variance)") + ", two-sided"


def _num(x):
    """float for JSON, None for NaN/inf/None."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


def order_tasks(tasks, sizes: dict) -> list[str]:
    """Largest training set first, as the paper's figure; tasks of unknown size last, by name."""
    return sorted(set(tasks), key=lambda t: (sizes.get(t) is None, -(sizes.get(t) or 0), t))


def _size_of(task: str, sizes: dict) -> int:
    """Size of a task or of a '+'-joined support (the sum), ValueError saying how to give it."""
    total = 0
    for part in task.split("+"):
        if part not in sizes:
            raise ValueError(f"no training size for task {part!r}: it is not in the task registry and no run "
                             f"record gives it; pass --sizes FILE.json with {{\"{part}\": N}}")
        total += sizes[part]
    return total


def compare(mtl: np.ndarray, stilts: np.ndarray, settings: StatsSettings, rng: np.random.Generator) -> dict:
    """Everything about MTL (n,) vs STILTs (m,) seed scores except the correction and heuristic."""
    n_m, mean_m, std_m = stats.describe(mtl)
    n_s, mean_s, std_s = stats.describe(stilts)
    out = dict(n_mtl=n_m, n_stilts=n_s, mean_mtl=_num(mean_m), std_mtl=_num(std_m), mean_stilts=_num(mean_s),
               std_stilts=_num(std_s), diff=_num(mean_m - mean_s), t=None, p=None, note="",
               ci_low=None, ci_high=None, aso_mtl=None, aso_stilts=None, pooled_std=None, seeds_needed=None)
    test = stats.t_test(mtl, stilts, welch=settings.welch)
    if test is None:
        out["note"] = "no test possible (fewer than 2 seeds on a side)"
        return out
    if math.isnan(test.t):
        out["note"] = "no test possible (all scores equal)"
        return out
    out.update(t=_num(test.t), p=_num(test.p))
    if math.isinf(test.t):
        out["note"] = "zero variance on both sides: t infinite"
    out["ci_low"], out["ci_high"] = stats.bootstrap_diff_ci(mtl, stilts, rng, settings.n_boot)
    out["aso_mtl"] = _num(stats.aso_min_epsilon(mtl, stilts, rng, settings.aso_boot))
    out["aso_stilts"] = _num(stats.aso_min_epsilon(stilts, mtl, rng, settings.aso_boot))
    pooled = math.sqrt(((n_m - 1) * std_m**2 + (n_s - 1) * std_s**2) / (n_m + n_s - 2))
    out["pooled_std"] = pooled
    if settings.power > 0:
        out["seeds_needed"] = stats.seeds_needed(settings.power, pooled, settings.alpha)
    return out


def _group(rows) -> dict:
    """(target, support, method) -> scores (n,) ordered by seed, so results do not depend on file order."""
    groups = defaultdict(list)
    for r in sorted(rows, key=lambda r: r.seed):
        groups[(r.target, r.support, r.method)].append(r.score)
    return {k: np.array(v) for k, v in groups.items()}


def analyse(rows: list[Score], settings: StatsSettings, sizes: dict[str, int], source: str = "") -> dict:
    """The whole analysis as a JSON-ready dict (see the module docstring); `source` says where the
    rows came from, for the report."""
    rng = np.random.default_rng(settings.seed)
    main = [r for r in rows if not r.in_size_experiment]
    groups = _group(main)
    empty = np.zeros(0)
    pairs = {(t, s) for (t, s, m) in groups if m in ("mtl", "stilts")}
    targets = order_tasks({t for t, _ in pairs} | {t for (t, _, m) in groups if m.startswith("mtl_all")}, sizes)
    supports = order_tasks({s for _, s in pairs}, sizes)

    cells = []
    for t in targets:
        for s in supports:
            if (t, s) not in pairs:
                continue
            cell = dict(target=t, support=s)
            cell.update(compare(groups.get((t, s, "mtl"), empty), groups.get((t, s, "stilts"), empty), settings, rng))
            cell["size_target"], cell["size_support"] = _size_of(t, sizes), _size_of(s, sizes)
            cells.append(cell)

    p = np.array([np.nan if c["p"] is None else c["p"] for c in cells])
    p_adj = stats.adjust_pvalues(p, settings.correction)
    picks = stats.size_heuristic_picks_mtl([c["size_target"] for c in cells], [c["size_support"] for c in cells])
    for c, pa, pick in zip(cells, p_adj, picks):
        c["p_adjusted"] = _num(pa)
        c["significant"] = bool(pa < settings.alpha) if not np.isnan(pa) else False
        c["predicted"] = "mtl" if pick else "stilts"
        c["correct"] = ((c["diff"] > 0) == bool(pick)) if c["significant"] else None
    sig = np.array([c["significant"] for c in cells], dtype=bool)
    diff = np.array([c["diff"] if c["diff"] is not None else np.nan for c in cells])
    n_sig, n_ok, acc = stats.heuristic_accuracy(diff, sig, picks)
    summary = dict(n_cells=len(cells), n_tested=int((~np.isnan(p)).sum()), n_significant=n_sig, n_correct=n_ok,
                   accuracy=_num(acc), n_mtl_better=int((sig & (diff > 0)).sum()),
                   n_stilts_better=int((sig & (diff < 0)).sum()))

    return dict(source=source, n_scores=len(rows),
                settings={**asdict(settings), "test": settings.test_name, "std": "sample std, ddof=1"},
                sizes=dict(sorted(sizes.items())), targets=targets, supports=supports, cells=cells, summary=summary,
                tables=_tables(cells, groups, targets, supports, sizes),
                logistic=_logistic(cells),
                size_experiment=_size_experiment([r for r in rows if r.in_size_experiment], settings, sizes, rng))


def _table(columns: list[str], targets: list[str], values: np.ndarray) -> dict:
    """{"columns", "rows"}: one row per target then "Average" (mean over the targets with a value)."""
    rows = [dict(target=t, **{c: _num(v) for c, v in zip(columns[1:], vals)}) for t, vals in zip(targets, values)]
    with np.errstate(invalid="ignore"):
        avg = [np.nan if np.isnan(col).all() else np.nanmean(col) for col in values.T]
    rows.append(dict(target="Average", **{c: _num(v) for c, v in zip(columns[1:], avg)}))
    return dict(columns=columns, rows=rows)


def _tables(cells, groups, targets, supports, sizes) -> dict:
    T, S = len(targets), len(supports)
    ti, si = {t: i for i, t in enumerate(targets)}, {s: j for j, s in enumerate(supports)}
    mtl, stilts = np.full((T, S), np.nan), np.full((T, S), np.nan)  # (T, S) cell means
    picks = np.zeros((T, S), dtype=bool)
    for c in cells:
        i, j = ti[c["target"]], si[c["support"]]
        mtl[i, j] = np.nan if c["mean_mtl"] is None else c["mean_mtl"]
        stilts[i, j] = np.nan if c["mean_stilts"] is None else c["mean_stilts"]
        picks[i, j] = c["predicted"] == "mtl"
    samplers = {m.partition(":")[2] or "dynamic" for (_, _, m) in groups if m.startswith("mtl_all")}
    samplers = sorted(samplers, key=lambda s: (SAMPLER_ORDER.index(s) if s in SAMPLER_ORDER else 99, s))

    def mtl_all_mean(t, sampler):
        x = groups.get((t, "", "mtl_all" if sampler == "dynamic" else f"mtl_all:{sampler}"))
        return np.nan if x is None else x.mean()

    t1 = stats.table1(mtl, stilts, np.array([mtl_all_mean(t, "dynamic") for t in targets]))
    t2 = stats.table2(np.array([[mtl_all_mean(t, s) for s in samplers] for t in targets]).reshape(T, len(samplers)),
                      mtl, stilts, picks)
    singles = order_tasks({t for (t, _, m) in groups if m == "single"}, sizes)
    single_rows = [dict(target=t, **dict(zip(("n", "mean", "std"), stats.describe(groups[(t, "", "single")]))))
                   for t in singles]
    return dict(table1=_table(["target", "MTL", "STILTs", "MTL-ALL"], targets, t1),
                table2=_table(["target", *[f"MTL-ALL ({s})" for s in samplers], "Ave. S.H.", "Pairwise Oracle"],
                              targets, t2),
                singles=[{k: (_num(v) if k in ("mean", "std") else v) for k, v in r.items()} for r in single_rows])


def _logistic(cells) -> dict:
    """P(MTL better) ~ log2(support size / target size) over significant cells."""
    sig = [c for c in cells if c["significant"]]
    x = np.array([math.log2(c["size_support"] / c["size_target"]) for c in sig])
    y = np.array([c["diff"] > 0 for c in sig], dtype=float)
    out = dict(n=len(sig), n_mtl_better=int(y.sum()), intercept=None, slope=None, converged=False, reason="",
               crossover_log2_ratio=None, crossover_interval=None, crossover_ratio=None)
    if len(sig) < 2:
        out["reason"] = "fewer than 2 significant cells"
        return out
    fit = stats.logistic_fit(x, y)
    out.update(converged=fit.converged, reason=fit.reason)
    if fit.converged:
        xc, lo, hi = stats.crossover(fit)
        out.update(intercept=float(fit.coef[0]), slope=float(fit.coef[1]), crossover_log2_ratio=_num(xc),
                   crossover_interval=[_num(lo), _num(hi)], crossover_ratio=_num(2.0**xc))
    return out


def _size_experiment(rows, settings, sizes, rng) -> list[dict]:
    """Figure 2's points: MTL vs STILTs per (target, target size, support, K), no correction."""
    groups = defaultdict(lambda: ([], []))
    for r in sorted(rows, key=lambda r: r.seed):
        if r.method not in ("mtl", "stilts"):
            continue
        key = (r.target, target_train_size(r, sizes) or 0, r.support, round(support_factor(r, sizes), 6))
        groups[key][0 if r.method == "mtl" else 1].append(r.score)
    points = []
    for (t, n_t, s, k) in sorted(groups, key=lambda g: (g[0], -g[1], g[2], g[3])):
        mtl, stilts = (np.array(v) for v in groups[(t, n_t, s, k)])
        point = dict(target=t, target_size=n_t, support=s, k=k, **compare(mtl, stilts, settings, rng))
        point["significant"] = point["p"] is not None and point["p"] < settings.alpha
        points.append(point)
    return points


# ---------------------------------------------------------------- Markdown
def _f(x, fmt=".2f") -> str:
    return "–" if x is None else format(x, fmt)


def _k_text(k: float) -> str:
    f = Fraction(k).limit_denominator(12)
    return str(f) if abs(float(f) - k) < 1e-6 else f"{k:.3g}"


def _seeds(c: dict) -> str:
    if c["pooled_std"] is None:
        return "–"
    return ">1000" if c["seeds_needed"] is None else str(c["seeds_needed"])


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def render_markdown(a: dict) -> str:
    """The report: settings, heuristic accuracy, the cells, Tables 1-2, the beyond-the-paper results."""
    st, sm = a["settings"], a["summary"]
    out = ["# MTL vs STILTs: statistics", "",
           f"Test: {st['test']}; alpha = {st['alpha']}; correction: {st['correction']}; std: {st['std']}. "
           f"Bootstrap and ASO seed {st['seed']}.", ""]
    if a["source"]:
        out[-1:] = [f"Data: {a['n_scores']} scores from {a['source']}.", ""]
    acc = "–" if sm["accuracy"] is None else f"{100 * sm['accuracy']:.1f}%"
    out += [f"**Size heuristic** (MTL when the target is smaller than the support): {sm['n_correct']} of "
            f"{sm['n_significant']} significant cells predicted correctly ({acc}); {sm['n_cells']} cells, "
            f"{sm['n_tested']} tested, MTL better in {sm['n_mtl_better']}, STILTs better in {sm['n_stilts_better']}.",
            "", "## Cells (MTL − STILTs)", ""]
    header = ["target", "support", "MTL", "STILTs", "diff", "t", "p", "p adj", "sig", "pred", "ok",
              "95% CI (bootstrap)", "ε_min MTL>STILTs", "ε_min STILTs>MTL"] + (["seeds"] if st["power"] else [])
    rows = []
    for c in a["cells"]:
        ci = "–" if c["ci_low"] is None else f"[{c['ci_low']:.2f}, {c['ci_high']:.2f}]"
        ok = {None: "", True: "yes", False: "**no**"}[c["correct"]]
        rows.append([c["target"], c["support"], f"{_f(c['mean_mtl'])} ± {_f(c['std_mtl'])} ({c['n_mtl']})",
                     f"{_f(c['mean_stilts'])} ± {_f(c['std_stilts'])} ({c['n_stilts']})", _f(c["diff"]),
                     _f(c["t"]), c["note"] if c["p"] is None else _f(c["p"], ".4f"), _f(c["p_adjusted"], ".4f"),
                     "yes" if c["significant"] else "", c["predicted"], ok, ci, _f(c["aso_mtl"]), _f(c["aso_stilts"])]
                    + ([_seeds(c)] if st["power"] else []))
    out += [_md_table(header, rows), ""]
    out += ["Cells show mean ± std (n seeds). ε_min < 0.5: the first method is almost stochastically better "
            "(Dror et al. 2019); smaller is stronger."]
    if st["power"]:
        out += [f"seeds: seeds per method for 80% power to detect a {st['power']} point difference at alpha "
                f"{st['alpha']} with the cell's pooled std (noncentral t)."]
    for key, title in (("table1", "Table 1: mean over supports"), ("table2", "Table 2: MTL-ALL vs pairwise")):
        tab = a["tables"][key]
        out += ["", f"## {title}", "", _md_table(tab["columns"], [[r["target"]] + [_f(r[c]) for c in tab["columns"][1:]]
                                                                  for r in tab["rows"]])]
    if a["tables"]["singles"]:
        out += ["", "## Single-task baselines", "",
                _md_table(["target", "mean ± std (n)"], [[r["target"], f"{_f(r['mean'])} ± {_f(r['std'])} ({r['n']})"]
                                                         for r in a["tables"]["singles"]])]
    lg = a["logistic"]
    out += ["", "## P(MTL better) against log2(support size / target size)", ""]
    if lg["converged"]:
        lo, hi = lg["crossover_interval"]
        out += [f"Logistic fit over {lg['n']} significant cells: logit P = {lg['intercept']:.3f} + "
                f"{lg['slope']:.3f} x. Crossover (P = 1/2) at x = {lg['crossover_log2_ratio']:.3f} "
                f"(95% delta-method interval [{_f(lo, '.3f')}, {_f(hi, '.3f')}]), i.e. support/target size ratio "
                f"{lg['crossover_ratio']:.3g}."]
    else:
        out += [f"No fit ({lg['n']} significant cells): {lg['reason']}."]
    if a["size_experiment"]:
        out += ["", "## Size experiment (Figure 2): support subsampled to K × target size", "",
                _md_table(["target (n)", "support", "K", "MTL", "STILTs", "diff", "p", "sig"],
                          [[f"{p['target']} ({p['target_size']})", p["support"], _k_text(p["k"]),
                            f"{_f(p['mean_mtl'])} ± {_f(p['std_mtl'])} ({p['n_mtl']})",
                            f"{_f(p['mean_stilts'])} ± {_f(p['std_stilts'])} ({p['n_stilts']})", _f(p["diff"]),
                            p["note"] if p["p"] is None else _f(p["p"], ".4f"), "yes" if p["significant"] else ""]
                           for p in a["size_experiment"]])]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- files
def write_atomic(path, data) -> Path:
    """Write str or bytes to path via a temp file + os.replace: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path


def _csv(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: ("" if r.get(k) is None else r[k]) for k in columns} for r in rows])
    return buf.getvalue()


def to_json(a: dict) -> str:
    return json.dumps(a, indent=1, allow_nan=False)


def write_outputs(a: dict, out_dir) -> list[Path]:
    """report.md, cells.csv, table1.csv, table2.csv, singles.csv, size_experiment.csv (when any)."""
    out_dir = Path(out_dir)
    written = [write_atomic(out_dir / "report.md", render_markdown(a))]
    if a["cells"]:
        written.append(write_atomic(out_dir / "cells.csv", _csv(list(a["cells"][0]), a["cells"])))
    for key in ("table1", "table2"):
        table = a["tables"][key]
        written.append(write_atomic(out_dir / f"{key}.csv", _csv(table["columns"], table["rows"])))
    if a["tables"]["singles"]:
        singles = _csv(["target", "n", "mean", "std"], a["tables"]["singles"])
        written.append(write_atomic(out_dir / "singles.csv", singles))
    if a["size_experiment"]:
        written.append(write_atomic(out_dir / "size_experiment.csv",
                                    _csv(list(a["size_experiment"][0]), a["size_experiment"])))
    return written
