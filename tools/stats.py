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
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tl.cli import ArgumentParser  # noqa: E402
from tl.cli import add_arguments, arg, from_namespace  # noqa: E402
from tl.study.report import StatsSettings, analyse, render_markdown, to_json, write_atomic, write_outputs  # noqa: E402
from tl.study.scores import read_run_records, read_scores_csv, task_sizes  # noqa: E402


@dataclass(frozen=True)
class Paths:
    results: str = arg("results", "folder of run records (<run_id>/record.json), read when --scores is not given")
    scores: str = arg("", "a scores table CSV (target,support,method,seed,score; optional protocol, default tl, "
                          "and passes) to analyse instead of run records")
    sizes: str = arg("", "JSON {task: training size} for tasks the registry does not know, or to override sizes")
    out: str = arg("stats", "folder for report.md, cells.csv, table1.csv, table2.csv and the figures")
    json: str = arg("", "also write the whole analysis (cells, summary, tables) as JSON to this file")
    plots: bool = arg(True, "draw Figure 1 and Figure 2 (needs matplotlib: pip install 'tl[plot]')")


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


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, Paths, "inputs and outputs")
    add_arguments(parser, StatsSettings, "statistics")
    ns = parser.parse_args(argv)
    try:
        paths, settings = from_namespace(Paths, ns), from_namespace(StatsSettings, ns)
        if paths.plots:
            from tl.study.plots import figures_from_analysis, require_matplotlib
            require_matplotlib()  # fail before the work when matplotlib is missing
        if paths.scores:
            rows, source = read_scores_csv(paths.scores), f"scores table {paths.scores}"
        else:
            rows, source = read_run_records(paths.results), f"complete run records under {paths.results}"
        analysis = analyse(rows, settings, task_sizes(rows, read_sizes(paths.sizes)), source=source)
        report = render_markdown(analysis)
        print(report)
        written = write_outputs(analysis, paths.out)
        if paths.plots:
            written += figures_from_analysis(analysis, paths.out)
        if paths.json:
            written.append(write_atomic(paths.json, to_json(analysis)))
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{analysis['n_scores']} scores (protocol {analysis['protocol']}) from {source}; wrote "
          + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
