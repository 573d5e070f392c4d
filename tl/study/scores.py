"""Seed scores for the statistics: `Score` rows (one seed of one method on one target, under one
protocol) read from a scores table (CSV) or from run records.
Imports tl.tasks (task names and official sizes) and tl.runs (the one rule that finds run records).

Scores table (README.md "Statistics"): header `target,support,method,seed,score` in any order, extra
columns ignored; optional `protocol` (empty: tl), `passes`, and for Figure 2's rows `support_size`
("2x", "1/3x" or a count) and `target_size` (a count); several supports are joined with `+`. Run
records: the complete ones (`tl.runs.complete_records`) except an mtl_all joint run's (its per-task
records carry the scores); mode and sampler make the method, and `config.support_size` /
`target_size` put a row in the size experiment. `mtl:dynamic` and `mtl_all:dynamic` are plain `mtl`
and `mtl_all` (dynamic is the default sampler). Task names take the registry's spelling ("sst2" ->
"SST-2"); a name it does not know is kept as written.
"""
import csv
import io
import math
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from tl.runs import complete_records
from tl.tasks import get_task, read_text

METHODS = ("single", "stilts", "mtl", "mtl_all")
PROTOCOLS = ("tl", "authors")
DEFAULT_SAMPLER = "dynamic"
CSV_COLUMNS = ("target", "support", "method", "seed", "score")
OPTIONAL_COLUMNS = ("support_size", "target_size", "protocol", "passes")
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
    protocol: str = "tl"  # whose rules trained it: "tl" | "authors"
    passes: float | None = None  # the target's examples seen / its train size; None = unknown

    @property
    def in_size_experiment(self) -> bool:
        return bool(self.support_size or self.target_size)


def _registered(name: str):
    """The registry's TaskSpec for a name (case-insensitive, aliases), None when it does not know it."""
    try:
        return get_task(name.strip())
    except (KeyError, ValueError, OSError):
        return None


def canonical_task(name: str) -> str:
    """The registry's spelling of a task name, else the name stripped."""
    spec = _registered(name)
    return spec.name if spec else name.strip()


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


def _protocol(text, where: str) -> str:
    protocol = str(text or "tl").strip().lower() or "tl"
    if protocol not in PROTOCOLS:
        raise ValueError(f"{where}: unknown protocol {text!r}; use tl or authors")
    return protocol


def _number(text: str, kind, what: str, where: str):
    try:
        x = kind(text)
    except ValueError:
        raise ValueError(f"{where}: {what} {text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not math.isfinite(x):
        raise ValueError(f"{where}: {what} {text!r} is not a finite number")
    return x


def _csv_row(row: dict, where: str) -> Score:
    target, method = row["target"], normalise_method(row["method"], where)
    if not target:
        raise ValueError(f"{where}: empty target")
    score = _number(row["score"], float, "score", where)
    seed = _number(row["seed"], int, "seed", where)
    passes = _number(row["passes"], float, "passes", where) if row.get("passes") else None
    support = _canonical_support(row["support"])
    _check_support(method, support, where)
    return Score(canonical_task(target), support, method, seed, score, where, support_size=row.get("support_size", ""),
                 target_size=row.get("target_size", ""), protocol=_protocol(row.get("protocol"), where), passes=passes)


def read_scores_csv(path) -> list[Score]:
    """The rows of a scores table; ValueError names the file and line of what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: scores table not found")
    rows, reader = [], csv.reader(io.StringIO(read_text(path), newline=""))  # a spreadsheet's BOM dropped
    header = [h.strip().lower() for h in next(reader, [])]
    for col in CSV_COLUMNS:
        if col not in header:
            raise ValueError(f"{path}: missing column {col!r} (the header must hold {','.join(CSV_COLUMNS)})")
    at = {name: header.index(name) for name in (*CSV_COLUMNS, *OPTIONAL_COLUMNS) if name in header}
    for fields in reader:
        where = f"{path}:{reader.line_num}"
        if not any(x.strip() for x in fields):
            continue  # blank line
        if len(fields) < len(header):
            raise ValueError(f"{where}: {len(fields)} fields, the header has {len(header)}")
        rows.append(_csv_row({name: fields[i].strip() for name, i in at.items()}, where))
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
    method = f"{mode}:{sampler}" if mode in ("mtl", "mtl_all") and sampler != DEFAULT_SAMPLER else mode
    support = _canonical_support("+".join(record.get("supports") or []) if mode in ("stilts", "mtl") else "")
    _check_support(method, support, where)
    config, target = record.get("config") or {}, canonical_task(str(record["target"]))
    try:
        score, seed = float(record["score"]), int(record["seed"])
        passes = {canonical_task(k): float(v) for k, v in (record.get("passes") or {}).items()}.get(target)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: score {record['score']!r}, seed {record['seed']!r} or passes "
                         f"{record.get('passes')!r} is not a number") from None
    sizes = tuple(sorted((canonical_task(k), int(v)) for k, v in (record.get("train_sizes") or {}).items()))
    return Score(target, support, method, seed, score, where, sizes, support_size=str(config.get("support_size") or ""),
                 target_size=str(config.get("target_size") or ""),
                 protocol=_protocol(record.get("protocol"), where), passes=passes)


def read_run_records(results_dir) -> list[Score]:
    """Score rows of the complete records under results_dir; errors say how to produce records."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder {results_dir} does not exist: {HOW_TO_MAKE_RECORDS}")
    rows = [record_to_score(r, str(results_dir / str(r.get("run_id", "?")) / "record.json"))
            for r in complete_records(results_dir) if r.get("role") != "train"]  # joint mtl_all runs: no score
    if not rows:
        raise ValueError(f"no complete run records under {results_dir}: {HOW_TO_MAKE_RECORDS}")
    check_unique(rows)
    return rows


def select_protocol(rows: list[Score], protocol: str = "") -> tuple[list[Score], str]:
    """(the rows of one protocol, its name); with `protocol` "" the rows must hold one protocol only:
    a matrix never mixes the authors' runs with tl's."""
    found = sorted({r.protocol for r in rows})
    if protocol:
        chosen = [r for r in rows if r.protocol == protocol]
        if not chosen:
            raise ValueError(f"no scores under protocol {protocol!r}; the scores hold {', '.join(found)}")
        return chosen, protocol
    if len(found) > 1:
        raise ValueError(f"the scores mix protocols {' and '.join(found)}; a matrix never mixes them: "
                         f"choose one with --protocol {'|'.join(found)}")
    return rows, (found[0] if found else "tl")


def check_unique(rows: list[Score]) -> None:
    """ValueError if two rows give the same (target, support, method, seed, size setting, protocol):
    mixing e.g. two schedules in one cell would silently inflate n."""
    seen = {}
    for r in rows:
        key = (r.target, r.support, r.method, r.seed, r.support_size, r.target_size, r.protocol)
        if key in seen:
            raise ValueError(f"{seen[key]} and {r.source}: two scores for target {r.target}, support "
                             f"{r.support or '-'}, method {r.method}, seed {r.seed}; keep one")
        seen[key] = r.source


def task_sizes(rows: list[Score], overrides: dict | None = None) -> dict[str, int]:
    """Training-set size per task for the size heuristic, in increasing precedence: the registry's; the
    most common in the main matrix's records (a `--limit-train` run's own); `overrides` (--sizes)."""
    tasks = {r.target for r in rows} | {p for r in rows if r.support for p in r.support.split("+")}
    sizes = {t: int(spec.train_size) for t in tasks if (spec := _registered(t)) and spec.train_size}
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
    return _number(row.target_size, int, "target size", row.source) if row.target_size else sizes.get(row.target)


def support_factor(row: Score, sizes: dict[str, int]) -> float:
    """K of the size experiment, support size / target size: from a "Kx" support_size ("2x", "1/3x"),
    else from the sizes (recorded train_sizes, a count in support_size, or `sizes`)."""
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
