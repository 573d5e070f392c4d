"""MTL vs STILTs statistics (Weller et al. 2022, Figure 1, Figure 2, Tables 1-2) from run records or a
scores table.

    python tools/stats.py                                  # every complete record under results/
    python tools/stats.py --scores scores.csv --welch --correction holm --out stats/ --json stats.json
    python tools/stats.py --protocol authors               # only the runs made under the authors' rules

Prints the Markdown report (protocol, test, alpha and correction at its top) and writes it with
cells.csv, table1.csv, table2.csv, figure1.png/.svg and, for the size experiment, figure2.png/.svg
under --out. The scores table is a CSV with header target,support,method,seed,score and optional
protocol and passes columns (see tl/study/scores.py). One report covers one protocol: when the scores
hold runs of both, --protocol tl|authors picks one (rows without a protocol are tl).
"""
import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/flags.py

from flags import ArgumentParser  # noqa: E402
from flags import add_arguments, from_namespace  # noqa: E402
from tl.train import arg  # noqa: E402
from tl.metrics import BOUNDS  # noqa: E402
from tl.runs import write_file  # noqa: E402
from tl.study.report import StatsSettings, analyse, render_markdown, to_json, write_outputs  # noqa: E402
from tl.study.scores import read_run_records, read_scores_csv, task_sizes  # noqa: E402
from tl.tasks import GLUE_TASKS, get_task  # noqa: E402


@dataclass(frozen=True)
class Paths:
    results: str = arg("results", "folder of run records (<run_id>/record.json), read when --scores is not given")
    scores: str = arg("", "a scores table CSV (target,support,method,seed,score; optional protocol, default tl, "
                          "and passes) to analyse instead of run records")
    sizes: str = arg("", "JSON {task: training size} for tasks the registry does not know, or to override sizes")
    out: str = arg("stats", "folder for report.md, cells.csv, table1.csv, table2.csv and the figures")
    json: str = arg("", "also write the whole analysis (cells, summary, tables) as JSON to this file")
    plots: bool = arg(True, "draw Figure 1 and Figure 2 (needs matplotlib: pip install 'tl[plot]')")
    scale: float = arg(0.0, "multiply every score by this (100: scores given as fractions, 0-1); 0: the scores are "
                            "x100 already, and a table that looks like fractions is refused")

    def __post_init__(self):
        if not 0 <= self.scale < math.inf:
            raise ValueError(f"--scale must be finite and >= 0 (0: the scores are x100 already), got {self.scale}")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise ValueError(f"--out {self.out}: a file is there, not a folder; name a folder")


def read_sizes(path: str) -> dict | None:
    if not path:
        return None
    try:
        sizes = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--sizes {path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"--sizes {path}: not valid JSON ({e})") from None
    if not isinstance(sizes, dict) or not all(isinstance(v, int) and v > 0 for v in sizes.values()):
        raise ValueError(f"--sizes {path}: expected a JSON object {{\"TASK\": positive integer, ...}}")
    return sizes


def checked_scores(rows: list, scale: float) -> list:
    """The rows with their scores times `scale` (0: as given), each in [-100, 100] (a metric x100).
    Without a scale, fractions where x100 is expected are refused, not analysed silently: a target whose
    scores all lie in [-1, 1] (not all 0), or, for a metric that is never below 0 (accuracy, F1), a score in
    (0, 1] among a target's x100 scores (a correlation near 0 is a real result: a run that did not learn)."""
    rows = [replace(r, score=r.score * scale) for r in rows] if scale else rows
    for r in rows:
        if not -100 <= r.score <= 100:
            raise ValueError(f"{r.source}: score {r.score:g} is outside [-100, 100] (scores are a metric x100)")
    if scale:
        return rows
    by_target = {}
    for r in rows:
        by_target.setdefault(r.target, []).append(r)
    fractions = [t for t, rs in by_target.items() if any(r.score for r in rs) and all(abs(r.score) <= 1 for r in rs)]
    if fractions:
        fix = "pass --scale 100 to multiply them" if len(fractions) == len(by_target) else "write them x100"
        raise ValueError(f"the scores of {', '.join(fractions)} (e.g. {by_target[fractions[0]][0].source}) all lie "
                         f"in [-1, 1]: fractions where x100 is expected? {fix} (--scale 1 takes them as given)")
    for target, rs in by_target.items():
        if target.lower() in {t.name.lower() for t in GLUE_TASKS} and BOUNDS[get_task(target).headline][0] < 0:
            continue  # Matthews, Pearson, Spearman: a score near 0 is no fraction
        typical = statistics.median(abs(r.score) for r in rs)
        odd = next((r for r in rs if 0 < abs(r.score) <= 1 and typical > 10), None)
        if odd:
            raise ValueError(f"{odd.source}: score {odd.score:g} looks like a fraction among {target}'s x100 scores "
                             f"(median {typical:g}): write it x100 (--scale 1 takes the scores as given)")
    return rows


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, Paths, "inputs and outputs")
    add_arguments(parser, StatsSettings, "statistics")
    ns = parser.parse_args(argv)
    try:
        paths, settings = from_namespace(Paths, ns), from_namespace(StatsSettings, ns)
        if paths.plots:
            from plots import figures_from_analysis, require_matplotlib
            require_matplotlib()  # fail before the work when matplotlib is missing
        if paths.scores:
            rows, source = read_scores_csv(paths.scores), f"scores table {paths.scores}"
        else:
            rows, source = read_run_records(paths.results), f"complete run records under {paths.results}"
        rows = checked_scores(rows, paths.scale)
        source += f" (scores x{paths.scale:g})" if paths.scale else ""
        analysis = analyse(rows, settings, task_sizes(rows, read_sizes(paths.sizes)), source=source)
        report = render_markdown(analysis)
        print(report)
        written = write_outputs(analysis, paths.out)
        if paths.plots:
            written += figures_from_analysis(analysis, paths.out)
        if paths.json:
            written.append(write_file(paths.json, to_json(analysis)))
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{analysis['n_scores']} scores (protocol {analysis['protocol']}) from {source}; wrote "
          + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
