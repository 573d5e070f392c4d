"""The paper's figures, drawn with matplotlib (an optional extra: pip install 'tl[plot]') through its
object API (no pyplot, no global backend switch), imported by tools/stats.py only when a figure is drawn.
Imports tl.runs (atomic writes) and tl.study.report (K labels); reads the dict of `tl.study.report.analyse`.

figure1  Weller et al. (2022) Figure 1: the (target x support) matrix of mean MTL - mean STILTs in the
         paper's colours (green: STILTs significantly better, blue: MTL, grey: neither; hatched: fewer
         than 2 seeds on a side); the size heuristic's misses in red, framed and marked with an x.
figure2  Figure 2: mean score against K (log scale), +-1 std bars for MTL and STILTs, a panel per
         target size. Each writes a PNG and an SVG titled with the protocol.
"""
import io
from pathlib import Path

import numpy as np

from tl.runs import write_file
from tl.study.report import k_label

STILTS_BETTER, NOT_SIGNIFICANT, MTL_BETTER, NO_TEST = -1, 0, 1, 2
COLOURS = {STILTS_BETTER: "#7fc97f", NOT_SIGNIFICANT: "#d9d9d9", MTL_BETTER: "#80b1d3", NO_TEST: "#d9d9d9"}
MISS = "#c00000"
LINES = {"mtl": "#1f78b4", "stilts": "#33a02c"}  # darker shades of the two fills, for Figure 2's lines
FORMATS = ("png", "svg")


def require_matplotlib():
    try:
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
    except ImportError:
        raise ImportError("figures need matplotlib: pip install 'tl[plot]' (or pip install matplotlib), "
                          "or pass --no-plots") from None
    return Figure, Patch, Line2D


def _save(fig, stem: Path) -> list[Path]:
    """stem.png and stem.svg, each written atomically."""
    paths = []
    for fmt in FORMATS:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150, bbox_inches="tight")
        paths.append(write_file(Path(stem).with_name(f"{Path(stem).name}.{fmt}"), buf.getvalue()))
    return paths


def figure1(diff: np.ndarray, state: np.ndarray, miss: np.ndarray, targets: list[str], supports: list[str],
            stem, title: str = "MTL − STILTs") -> list[Path]:
    """Writes stem.png and stem.svg. diff (T, S) mean MTL - mean STILTs, NaN where there is no cell;
    state (T, S) one of the four states above; miss (T, S) bool, the heuristic's wrong predictions."""
    Figure, Patch, Line2D = require_matplotlib()
    from matplotlib.patches import Rectangle

    T, S = diff.shape
    rgb = np.ones((T, S, 3))  # (T, S, 3) white where no cell
    for value, colour in COLOURS.items():
        rgb[(state == value) & ~np.isnan(diff)] = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    fig = Figure(figsize=(0.75 * S + 2.8, 0.55 * T + 1.8))
    ax = fig.add_subplot()
    ax.imshow(rgb, aspect="auto")
    for i in range(T):
        for j in range(S):
            if np.isnan(diff[i, j]):
                continue
            if state[i, j] == NO_TEST:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", ec="#a0a0a0", lw=0))
            ax.text(j, i, f"{diff[i, j]:.1f}", ha="center", va="center", fontsize=9,
                    color=MISS if miss[i, j] else "black", fontweight="bold" if miss[i, j] else "normal")
            if miss[i, j]:
                ax.add_patch(Rectangle((j - 0.44, i - 0.44), 0.88, 0.88, fill=False, ec=MISS, lw=1.5))
                ax.plot([j + 0.3], [i - 0.27], marker="x", color=MISS, ms=5, mew=1.5)
    ax.set_xticks(range(S), supports, rotation=45, ha="right")
    ax.set_yticks(range(T), targets)
    ax.set_xticks(np.arange(S + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(T + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=2)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("supporting task")
    ax.set_ylabel("target task")
    ax.set_title(title)
    handles = [Patch(color=COLOURS[STILTS_BETTER], label="STILTs better"),
               Patch(color=COLOURS[MTL_BETTER], label="MTL better"),
               Patch(color=COLOURS[NOT_SIGNIFICANT], label="no significant difference"),
               Patch(fc=COLOURS[NO_TEST], ec="#a0a0a0", hatch="//", lw=0, label="no test (< 2 seeds)"),
               Line2D([], [], color=MISS, marker="x", lw=0, label="size heuristic wrong")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    return _save(fig, stem)


def figure2(series: list[dict], stem, title: str = "") -> list[Path]:
    """Writes stem.png and stem.svg; series: per panel, "title" and the arrays (P,) "k", "mean_mtl",
    "std_mtl", "mean_stilts", "std_stilts" (NaN where missing)."""
    Figure, _, _ = require_matplotlib()
    fig = Figure(figsize=(4.2 * len(series), 3.4))
    if title:
        fig.suptitle(title, fontsize=10)
    axes = fig.subplots(1, len(series), squeeze=False)[0]
    for ax, s in zip(axes, series):
        k = np.asarray(s["k"], dtype=float)
        for name, shift in (("mtl", 0.985), ("stilts", 1.015)):
            # the two methods are drawn a hair apart on the log axis so their error bars do not overlap
            ax.errorbar(k * shift, s[f"mean_{name}"], yerr=np.nan_to_num(np.asarray(s[f"std_{name}"], float)),
                        marker="o", capsize=3, color=LINES[name], ecolor=LINES[name],
                        label="MTL" if name == "mtl" else "STILTs")
        ax.set_xscale("log")
        ax.set_xticks(k, [k_label(x) for x in k])
        ax.minorticks_off()
        ax.axvline(1.0, color="gray", ls=":", lw=1)
        ax.set_xlabel("support size / target size (K)")
        ax.set_ylabel("target dev score")
        ax.set_title(s["title"], fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, stem)


def matrix_state(a: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """figure1's diff, state, miss (T, S) from the analysis, and the targets that have cells."""
    cells, supports = a["cells"], a["supports"]
    targets = [t for t in a["targets"] if any(c["target"] == t for c in cells)]
    ti, si = {t: i for i, t in enumerate(targets)}, {s: j for j, s in enumerate(supports)}
    diff = np.full((len(targets), len(supports)), np.nan)  # (T, S)
    state, miss = np.zeros(diff.shape, dtype=int), np.zeros(diff.shape, dtype=bool)
    for c in cells:
        i, j = ti[c["target"]], si[c["support"]]
        diff[i, j] = np.nan if c["diff"] is None else c["diff"]
        if c["significant"]:
            state[i, j] = MTL_BETTER if c["diff"] > 0 else STILTS_BETTER
        elif min(c["n_mtl"], c["n_stilts"]) < 2:
            state[i, j] = NO_TEST
        miss[i, j] = c["correct"] is False
    return diff, state, miss, targets


def figures_from_analysis(a: dict, out_dir) -> list[Path]:
    """figure1.png/.svg from the cells; figure2.png/.svg when there is a size experiment."""
    out_dir, written, st = Path(out_dir), [], a["settings"]
    if a["cells"]:
        diff, state, miss, targets = matrix_state(a)
        title = (f"MTL − STILTs, protocol {a['protocol']} ({'Welch' if st['welch'] else 'Student'} t-test, "
                 f"α = {st['alpha']}, correction: {st['correction']})")
        written += figure1(diff, state, miss, targets, a["supports"], out_dir / "figure1", title)
    groups = {}
    for p in a["size_experiment"]:
        groups.setdefault((p["target"], p["target_size"], p["support"]), []).append(p)
    series = []
    for (t, n, s), ps in groups.items():
        get = lambda key: np.array([np.nan if p[key] is None else p[key] for p in ps])  # noqa: E731
        series.append(dict(title=f"{t} (n = {n}) with {s}", k=get("k"), mean_mtl=get("mean_mtl"),
                           std_mtl=get("std_mtl"), mean_stilts=get("mean_stilts"), std_stilts=get("std_stilts")))
    if series:
        written += figure2(series, out_dir / "figure2", f"Size experiment, protocol {a['protocol']}")
    return written
