"""Seed scores for the statistics, read from a scores table (CSV) or from run records.

Both inputs become one list of `Score` rows (one seed of one method on one target), which
`tl.report` turns into the paper's analysis. The two file contracts are in ../shared/ARCHITECTURE.md:

Scores table: CSV with header `target,support,method,seed,score` (any column order; extra columns are
ignored) so that results made by any framework can be analysed. method is single, stilts, mtl,
mtl_all, or sampler-qualified as `mtl:S` / `mtl_all:S`; `mtl_all:dynamic` and `mtl:dynamic` are the
same as plain `mtl_all` and `mtl` (dynamic is the paper's and tl's default sampler). support is
empty for single and mtl_all; a multi-support run joins its supports with `+`. Two optional columns
mark rows of the dataset-size experiment (Figure 2): `support_size` ("2x", "1/3x", or a count) and
`target_size` (a count; empty = the full training set).

Run records: every `record.json` under the results folder (any depth); only status "complete" is
counted, and an mtl_all joint training run (`"role": "train"`) is skipped because its per-task
records carry the scores. Mapping: mode single -> method single, support ""; stilts -> stilts, support = supports
joined by "+"; mtl -> mtl (sampler dynamic or absent) or `mtl:<sampler>`; mtl_all -> support "",
method mtl_all (dynamic) or `mtl_all:<sampler>`. The record's `train_sizes` are kept (they give the
sizes actually trained on), and `config.support_size` / `config.target_size`, when set, put the row in
the size experiment instead of the main matrix.

Task names are matched case-insensitively to the registry (`tl.tasks.get_task`) and written in its
canonical spelling ("sst2" -> "SST-2"); a name the registry does not know is kept as written.
"""
import csv
import json
import math
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from tl.tasks import get_task

METHODS = ("single", "stilts", "mtl", "mtl_all")
DEFAULT_SAMPLER = "dynamic"
CSV_COLUMNS = ("target", "support", "method", "seed", "score")
HOW_TO_MAKE_RECORDS = ("produce run records with `python tools/train.py --mode mtl --tasks rte,mrpc` "
                       "(or `python tools/grid.py`), or analyse a scores table with --scores FILE.csv")


@dataclass(frozen=True)
class Score:
    """One seed's headline score (x100) of one method on one target."""
    target: str
    support: str  # "" for single and mtl_all; "A+B" for several supports
    method: str  # single | stilts | mtl | mtl_all, optionally ":sampler"
    seed: int
    score: float
    source: str  # "file.csv:12" or the record's path, for error messages
    train_sizes: tuple = ()  # ((task, n), ...) actually trained on, from a run record
    support_size: str = ""  # size experiment: the support's subsample as given ("2x", "1/3x", "5000")
    target_size: str = ""  # size experiment: the target's subsample as a count; "" = full

    @property
    def in_size_experiment(self) -> bool:
        return bool(self.support_size or self.target_size)


def canonical_task(name: str) -> str:
    """The registry's spelling of a task name (case-insensitive, aliases), else the name stripped."""
    name = name.strip()
    try:
        return get_task(name).name
    except (KeyError, ValueError, OSError):
        return name


def official_train_size(task: str) -> int | None:
    """The registry's official training-set size of a task, None if the registry does not know it."""
    try:
        return int(get_task(task).train_size)
    except (KeyError, ValueError, OSError, TypeError):
        return None


def _canonical_support(text: str) -> str:
    return "+".join(canonical_task(p) for p in text.split("+")) if text.strip() else ""


def normalise_method(text: str, where: str) -> str:
    """`mtl_all:Dynamic` -> `mtl_all`, `MTL_ALL:size` -> `mtl_all:size`; ValueError naming `where`."""
    base, _, sampler = text.strip().lower().partition(":")
    if base not in METHODS:
        raise ValueError(f"{where}: unknown method {text!r}; use one of {', '.join(METHODS)} "
                         f"(or mtl:SAMPLER / mtl_all:SAMPLER)")
    if sampler and base not in ("mtl", "mtl_all"):
        raise ValueError(f"{where}: method {text!r}: only mtl and mtl_all take a :sampler")
    return base if sampler in ("", DEFAULT_SAMPLER) else f"{base}:{sampler}"


def read_scores_csv(path) -> list[Score]:
    """Read a scores table (see the module docstring). ValueError names the file and line of any
    missing column, non-numeric score or seed, unknown method, or empty table."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: scores table not found")
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        for col in CSV_COLUMNS:
            if col not in header:
                raise ValueError(f"{path}: missing column {col!r} (the header must hold {','.join(CSV_COLUMNS)})")
        at = {name: header.index(name) for name in (*CSV_COLUMNS, "support_size", "target_size") if name in header}
        for fields in reader:
            where = f"{path}:{reader.line_num}"
            if not any(x.strip() for x in fields):
                continue  # blank line
            if len(fields) < len(header):
                raise ValueError(f"{where}: {len(fields)} fields, the header has {len(header)}")
            row = {name: fields[i].strip() for name, i in at.items()}
            target, method = row["target"], normalise_method(row["method"], where)
            if not target:
                raise ValueError(f"{where}: empty target")
            try:
                score = float(row["score"])
            except ValueError:
                raise ValueError(f"{where}: score {row['score']!r} is not a number") from None
            if not math.isfinite(score):
                raise ValueError(f"{where}: score {row['score']!r} is not a finite number")
            try:
                seed = int(row["seed"])
            except ValueError:
                raise ValueError(f"{where}: seed {row['seed']!r} is not an integer") from None
            support = _canonical_support(row["support"])
            _check_support(method, support, where)
            rows.append(Score(canonical_task(target), support, method, seed, score, where,
                              support_size=row.get("support_size", ""), target_size=row.get("target_size", "")))
    if not rows:
        raise ValueError(f"{path}: no score rows below the header")
    check_unique(rows)
    return rows


def _check_support(method: str, support: str, where: str) -> None:
    base = method.partition(":")[0]
    if base in ("stilts", "mtl") and not support:
        raise ValueError(f"{where}: method {method} needs a support task")
    if base in ("single", "mtl_all") and support:
        raise ValueError(f"{where}: method {method} takes no support (leave the column empty)")


def record_to_score(record: dict, where: str) -> Score:
    """One complete run record -> a Score row (mapping in the module docstring)."""
    for key in ("mode", "target", "seed", "score"):
        if record.get(key) is None:
            raise ValueError(f"{where}: complete record without {key!r}")
    mode = str(record["mode"]).lower()
    if mode not in METHODS:
        raise ValueError(f"{where}: unknown mode {record['mode']!r}")
    sampler = str(record.get("sampler") or DEFAULT_SAMPLER).lower()
    if mode in ("mtl", "mtl_all"):
        method = mode if sampler == DEFAULT_SAMPLER else f"{mode}:{sampler}"
    else:
        method = mode
    support = "+".join(record.get("supports") or []) if mode in ("stilts", "mtl") else ""
    config = record.get("config") or {}
    try:
        score = float(record["score"])
        seed = int(record["seed"])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: score {record['score']!r} or seed {record['seed']!r} is not a number") from None
    sizes = tuple(sorted((canonical_task(k), int(v)) for k, v in (record.get("train_sizes") or {}).items()))
    support_canon = _canonical_support(support)
    _check_support(method, support_canon, where)
    return Score(canonical_task(str(record["target"])), support_canon, method, seed, score, where, sizes,
                 support_size=str(config.get("support_size") or ""), target_size=str(config.get("target_size") or ""))


def read_run_records(results_dir) -> tuple[list[Score], int]:
    """(rows, n_not_complete) from every record.json under results_dir. Errors name the folder or file
    and, when there is nothing to analyse, how to produce records."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder {results_dir} does not exist: {HOW_TO_MAKE_RECORDS}")
    rows, skipped = [], 0
    for path in sorted(results_dir.rglob("record.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a readable JSON run record ({e})") from None
        if record.get("status") != "complete":
            skipped += 1
            continue
        if record.get("role") == "train":
            continue  # an mtl_all joint run: its per-task records carry the scores
        rows.append(record_to_score(record, str(path)))
    if not rows:
        found = f" ({skipped} not complete)" if skipped else ""
        raise ValueError(f"no complete run records under {results_dir}{found}: {HOW_TO_MAKE_RECORDS}")
    check_unique(rows)
    return rows, skipped


def check_unique(rows: list[Score]) -> None:
    """ValueError if two rows give the same (target, support, method, seed, size setting): mixing
    e.g. two schedules in one cell would silently inflate n."""
    seen = {}
    for r in rows:
        key = (r.target, r.support, r.method, r.seed, r.support_size, r.target_size)
        if key in seen:
            raise ValueError(f"{seen[key]} and {r.source}: two scores for target {r.target}, support "
                             f"{r.support or '-'}, method {r.method}, seed {r.seed}; keep one")
        seen[key] = r.source


def task_sizes(rows: list[Score], overrides: dict | None = None) -> dict[str, int]:
    """Training-set size per task for the size heuristic. In increasing precedence: the registry's
    official size; the size recorded in run records of the main matrix (the most common value, so a
    `--limit-train` run is analysed with the sizes it used); `overrides` (e.g. --sizes FILE.json).
    Tasks with no known size are absent."""
    tasks = {r.target for r in rows} | {p for r in rows if r.support for p in r.support.split("+")}
    sizes = {t: n for t in tasks if (n := official_train_size(t)) is not None}
    recorded = Counter((t, n) for r in rows if not r.in_size_experiment for t, n in r.train_sizes)
    for t in {t for t, _ in recorded}:
        sizes[t] = max((c, n) for (u, n), c in recorded.items() if u == t)[1]
    for t, n in (overrides or {}).items():
        sizes[canonical_task(t)] = int(n)
    return sizes


def target_train_size(row: Score, sizes: dict[str, int]) -> int | None:
    """Examples the row's target was trained on: recorded, else its target_size, else `sizes`."""
    recorded = dict(row.train_sizes)
    if row.target in recorded:
        return recorded[row.target]
    if row.target_size:
        try:
            return int(row.target_size)
        except ValueError:
            raise ValueError(f"{row.source}: target size {row.target_size!r} is not a count") from None
    return sizes.get(row.target)


def support_factor(row: Score, sizes: dict[str, int]) -> float:
    """K of the size experiment: support size / target size. From the `support_size` string when it
    is written "Kx" ("2x", "0.5x", "1/3x"), else from the sizes (recorded train_sizes, a count in
    support_size, or `sizes`). ValueError naming the row's source when it cannot be found."""
    text = row.support_size.strip().lower()
    try:
        if text.endswith("x"):
            return float(Fraction(text[:-1].strip()))
        recorded = dict(row.train_sizes)
        n_support = recorded.get(row.support) or (int(text) if text else sizes.get(row.support))
        n_target = target_train_size(row, sizes)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{row.source}: support size {row.support_size!r} is neither Kx (2x, 1/3x) "
                         "nor a count") from None
    if not n_support or not n_target:
        raise ValueError(f"{row.source}: cannot tell the support/target size ratio; give support_size as Kx")
    return n_support / n_target
