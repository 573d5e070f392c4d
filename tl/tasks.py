"""Task registry and TSV readers: the nine GLUE tasks and user-defined sentence(-pair) tasks (a task.json).

GLUE entries follow the files GLUE's `download_glue_data.py` writes (folders, names, headers, columns), the
label orders of the transformers GLUE processors the paper's code used, and docs/PROTOCOL.md's headline
metrics and train sizes, in the paper's matrix order. Files are read as GLUE loaders read them:
tab-separated, quoting off (a leading `"` is text). Imports tl.metrics.
"""
import dataclasses
import json
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from tl.metrics import METRICS

Column = Union[int, str]  # a column index (negative counts from the end) or a header name
MAX_BAD_FRACTION = 0.01   # more malformed lines than this means the wrong file or the wrong spec
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # task and split names: they name folders


@dataclass(frozen=True)
class TaskSpec:
    """Everything needed to read, score and report one task."""

    name: str                          # canonical name, e.g. "SST-2"
    dirname: str                       # folder under the data dir, e.g. "SST-2"
    files: dict = field(hash=False)    # split -> file name in the folder (or an absolute path)
    text_a: Column
    text_b: Optional[Column]           # None for single-sentence tasks
    label: Column
    has_header: bool
    labels: Optional[tuple]            # label strings in class-id order; None = regression
    metrics: tuple                     # names in tl.metrics.METRICS, all reported
    headline: str                      # the metric of the paper's matrices (x100)
    train_size: Optional[int] = None   # official number of training examples
    aliases: tuple = ()                # other accepted names, e.g. ("stsb",)
    label_range: Optional[tuple] = None  # regression: (low, high); a score outside it is a bad line

    def __post_init__(self):
        where = f"task {self.name!r}"
        for name in (self.name, *self.files):
            if not (isinstance(name, str) and SAFE_NAME.fullmatch(name)):
                raise ValueError(f"{where}: {name!r} is not a task or split name (they name folders): use "
                                 "letters, digits, '-' and '_', starting with a letter or digit")
        if self.train_size is not None and (type(self.train_size) is not int or self.train_size <= 0):
            raise ValueError(f"{where}: train_size must be a positive integer, got {self.train_size!r}")
        r = self.label_range
        if r is not None and (self.labels is not None or len(r) != 2 or not -math.inf < r[0] < r[1] < math.inf):
            raise ValueError(f"{where}: label_range must be [low, high] with low < high, for a regression task")
        if "train" not in self.files or "dev" not in self.files:
            raise ValueError(f"{where}: files must name a 'train' and a 'dev' file, got {sorted(self.files)}")
        unknown = sorted({m for m in (*self.metrics, self.headline) if m not in METRICS})
        if unknown:
            raise ValueError(f"{where}: unknown metric(s) {unknown}; choose from {sorted(METRICS)}")
        if self.headline not in self.metrics:
            raise ValueError(f"{where}: headline {self.headline!r} must be one of its metrics {list(self.metrics)}")
        if self.labels is not None and (len(self.labels) == 0 or len(set(self.labels)) != len(self.labels)):
            raise ValueError(f"{where}: labels must be distinct and non-empty, got {self.labels}")
        if self.labels is None and {"accuracy", "f1", "matthews", "acc_and_f1"} & set(self.metrics):
            raise ValueError(f"{where}: a regression task (no labels) can only use pearson/spearman")
        for column in (self.text_a, self.text_b, self.label):
            if isinstance(column, bool) or not isinstance(column, (int, str, type(None))):
                raise ValueError(f"{where}: a column must be an index or a header name, got {column!r}")
            if isinstance(column, str) and not self.has_header:
                raise ValueError(f"{where}: column {column!r} given by name but has_header is false; use an index")
        if self.text_a is None or self.label is None:
            raise ValueError(f"{where}: text_a and label columns are required")

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        """Output width of the task's head: number of classes, 1 for regression."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def eval_splits(self) -> tuple:
        """Splits scored at each evaluation: "dev" first (it drives selection), then e.g. "dev_mismatched"."""
        return ("dev",) + tuple(s for s in self.files if s not in ("train", "dev"))


TRAIN_DEV = {"train": "train.tsv", "dev": "dev.tsv"}
BINARY, NLI = ("0", "1"), ("entailment", "not_entailment")
ACC, ACC_F1 = ("accuracy",), ("accuracy", "f1", "acc_and_f1")
# Label orders of transformers' glue processors (MnliProcessor.get_labels etc.), which the paper's code used.
# TaskSpec(name, dirname, files, text_a, text_b, label, has_header, labels, metrics, headline, train_size, aliases)
GLUE_TASKS = (
    TaskSpec("MNLI", "MNLI", {"train": "train.tsv", "dev": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv"},
             "sentence1", "sentence2", "gold_label", True, ("contradiction", "entailment", "neutral"), ACC, "accuracy",
             392702, ("multinli",)),
    TaskSpec("QQP", "QQP", TRAIN_DEV, "question1", "question2", "is_duplicate", True, BINARY, ACC_F1, "acc_and_f1",
             363846),
    TaskSpec("QNLI", "QNLI", TRAIN_DEV, "question", "sentence", "label", True, NLI, ACC, "accuracy", 104743),
    TaskSpec("SST-2", "SST-2", TRAIN_DEV, "sentence", None, "label", True, BINARY, ACC, "accuracy", 67349, ("sst",)),
    # CoLA has no header: source code, label, original annotation, sentence
    TaskSpec("CoLA", "CoLA", TRAIN_DEV, 3, None, 1, False, BINARY, ("matthews", "accuracy"), "matthews", 8551),
    TaskSpec("STS-B", "STS-B", TRAIN_DEV, "sentence1", "sentence2", "score", True, None, ("pearson", "spearman"),
             "spearman", 5749, ("sts",), label_range=(0.0, 5.0)),  # similarity from 0 to 5 (Cer et al. 2017)
    # MRPC's header is "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String" (the BOM is stripped on read)
    TaskSpec("MRPC", "MRPC", TRAIN_DEV, "#1 String", "#2 String", "Quality", True, BINARY, ACC_F1, "acc_and_f1", 3668),
    TaskSpec("RTE", "RTE", TRAIN_DEV, "sentence1", "sentence2", "label", True, NLI, ACC, "accuracy", 2490),
    TaskSpec("WNLI", "WNLI", TRAIN_DEV, "sentence1", "sentence2", "label", True, BINARY, ACC, "accuracy", 635),
)

_REGISTRY: dict = {}  # name or alias, lowercase without punctuation ('STS-B', 'sts_b' -> 'stsb') -> TaskSpec


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def register_task(spec: TaskSpec) -> TaskSpec:
    """Make `spec` findable by `get_task` under its name and aliases (case-insensitive)."""
    keys = [_key(n) for n in (spec.name, *spec.aliases)]
    for key in keys:
        if _REGISTRY.get(key, spec) != spec:
            raise ValueError(f"task name {spec.name!r} clashes with registered task {_REGISTRY[key].name!r}; rename it")
    _REGISTRY.update(dict.fromkeys(keys, spec))
    return spec


for _spec in GLUE_TASKS:
    register_task(_spec)


def get_task(name: str) -> TaskSpec:
    """A registered task by name or alias ('qnli', 'QNLI', 'sts-b', 'stsb'), or a JSON spec file path."""
    if name.endswith(".json"):
        return register_task(load_task_spec(name))
    if _key(name) not in _REGISTRY:
        known = ", ".join(s.name for s in GLUE_TASKS)
        raise ValueError(f"unknown task {name!r}; known: {known} (or pass a task spec .json file)")
    return _REGISTRY[_key(name)]


_BOOL = (bool, None, "true or false")
_SPEC_KEYS = {  # key -> (its JSON type, its items' type, what the error asks for); TaskSpec checks the columns
    "name": (str, None, "a string"), "files": (dict, str, "an object {split: file name}"), "text_a": None,
    "text_b": None, "label": None, "has_header": _BOOL, "regression": _BOOL,
    "labels": (list, (str, int), "a list of label strings"), "metrics": (list, str, "a list of metric names"),
    "headline": (str, None, "a metric name"), "train_size": (int, None, "a positive integer"),
    "aliases": (list, str, "a list of names"), "label_range": (list, (int, float), "[low, high]")}


def load_task_spec(path) -> TaskSpec:
    """A TaskSpec from a task.json (keys in README "Data"); files are relative to its folder. Defaults:
    metrics accuracy (regression: pearson, spearman), headline the first metric."""
    path = Path(path)
    try:
        raw = json.loads(read_text(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"task spec {path} not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object with keys {sorted(_SPEC_KEYS)}")
    unknown = set(raw) - set(_SPEC_KEYS)
    missing = {"name", "files", "text_a", "label"} - set(raw)
    if unknown or missing:
        problem = f"unknown keys {sorted(unknown)}" if unknown else f"missing keys {sorted(missing)}"
        raise ValueError(f"{path}: {problem}; allowed: {sorted(_SPEC_KEYS)}")
    for key, (kind, item, what) in ((k, rule) for k, rule in _SPEC_KEYS.items() if rule and k in raw):
        if type(raw[key]) is not kind or item and not all(isinstance(x, item) for x in (
                raw[key].values() if kind is dict else raw[key])):
            raise ValueError(f"{path}: \"{key}\" must be {what}, got {json.dumps(raw[key])}")
    regression = raw.get("regression", False)
    if regression == ("labels" in raw):
        raise ValueError(f"{path}: give either \"labels\": [...] (classification) or \"regression\": true")
    metrics = tuple(raw.get("metrics", ["pearson", "spearman"] if regression else ["accuracy"]))
    if not metrics:
        raise ValueError(f"{path}: \"metrics\" is empty; name at least one of {sorted(METRICS)}")
    try:
        return TaskSpec(
            name=raw["name"], dirname=path.parent.name,
            files={split: str((path.parent / f).resolve()) for split, f in raw["files"].items()},
            text_a=raw["text_a"], text_b=raw.get("text_b"), label=raw["label"],
            has_header=raw.get("has_header", True), label_range=tuple(raw.get("label_range", ())) or None,
            labels=None if regression else tuple(str(x) for x in raw["labels"]),
            metrics=metrics, headline=raw.get("headline", metrics[0]),
            train_size=raw.get("train_size"), aliases=tuple(raw.get("aliases", ())))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


@dataclass
class Examples:
    """The rows of one split: `labels` are int64 class ids (N,), or float32 scores (N,) for regression."""

    text_a: list
    text_b: Optional[list]
    labels: np.ndarray
    path: Path
    skipped: int = 0  # malformed lines left out

    def __len__(self) -> int:
        return len(self.text_a)


def read_text(path, encoding: str = "utf-8-sig") -> str:
    """A UTF-8 file's text, a leading byte-order mark dropped; ValueError naming the line of a bad byte."""
    data = Path(path).read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 ({e.reason} at byte {e.start}); save it as UTF-8") from None


def split_path(spec: TaskSpec, data_dir, split: str) -> Path:
    if split not in spec.files:
        raise ValueError(f"task {spec.name} has no split {split!r}; it has {list(spec.files)}")
    return Path(data_dir) / spec.dirname / spec.files[split]  # an absolute file name replaces the prefix


def _resolve(column: Column, header: Optional[list], n_fields: int, path: Path) -> int:
    if isinstance(column, str):
        if column not in header:
            raise ValueError(f"{path}: column {column!r} not in the header {header}")
        return header.index(column)
    if not -n_fields <= column < n_fields:
        raise ValueError(f"{path}: column index {column} out of range for {n_fields} fields per line")
    return column % n_fields


def read_split(spec: TaskSpec, data_dir, split: str) -> Examples:
    """Read one split of a task. A line with the wrong number of fields, an unknown label or a score
    outside the task's label_range is skipped and counted, with one warning naming the file and the
    first line numbers; more than 1% of such lines raises ValueError (the file does not match the spec)."""
    path = split_path(spec, data_dir, split)
    if not path.is_file():
        if path.is_dir():
            how = "a folder is there, not a file: move it away and put the tab-separated file in its place"
        elif spec.name in {t.name for t in GLUE_TASKS}:
            how = (f"run `python tools/download_glue.py --tasks {spec.name} --data-dir {data_dir}`, or put the "
                   f"official GLUE files in {path.parent}/")
        else:
            how = f"put the file there or fix \"files\" in the task spec of {spec.name}"
        raise FileNotFoundError(f"{spec.name} {split} file not found: {path}; {how}")
    # Split on "\n" only: str.splitlines would also break lines at \x0b, \x1c, \u2028, ... inside text.
    lines = read_text(path).split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    rows = [line.rstrip("\r").split("\t") for line in lines]
    first = int(spec.has_header)
    if len(rows) <= first:
        raise ValueError(f"{path}: no data lines")
    header = rows[0] if spec.has_header else None
    # Without a header, the most common field count is the file's layout.
    n_fields = len(header) if header else Counter(map(len, rows)).most_common(1)[0][0]
    a, b, y = (None if c is None else _resolve(c, header, n_fields, path)
               for c in (spec.text_a, spec.text_b, spec.label))
    label_ids = None if spec.is_regression else {s: i for i, s in enumerate(spec.labels)}
    low, high = spec.label_range or (-np.inf, np.inf)
    kept, labels, bad = [], [], []
    for line_no, fields in enumerate(rows[first:], start=first + 1):
        label = None
        if len(fields) == n_fields:
            try:
                raw = fields[y].strip()
                label = float(raw) if label_ids is None else label_ids[raw]
            except (KeyError, ValueError):  # an unknown label, or a score that is no number
                pass
        if label is None or label_ids is None and not (np.isfinite(label) and low <= label <= high):
            bad.append(line_no)
        else:
            kept.append(fields)
            labels.append(label)

    n_rows = len(rows) - first
    if bad:
        message = (f"{path}: skipped {len(bad)} of {n_rows} lines (wrong field count, unknown label or bad score), "
                   f"lines {', '.join(map(str, bad[:5]))}{', ...' if len(bad) > 5 else ''}")
        if len(bad) > MAX_BAD_FRACTION * n_rows:
            raise ValueError(f"{message}: more than {MAX_BAD_FRACTION:.0%} bad, so the file does not match "
                             f"task {spec.name}'s spec (columns, labels, header)")
        warnings.warn(message, stacklevel=2)
    return Examples(text_a=[f[a] for f in kept], text_b=None if b is None else [f[b] for f in kept],
                    labels=np.asarray(labels, np.float32 if spec.is_regression else np.int64), path=path,
                    skipped=len(bad))


def with_files(spec: TaskSpec, **files) -> TaskSpec:
    """A copy of `spec` reading other files, e.g. `with_files(get_task("QQP"), train="partial/train_subset.tsv")`."""
    return dataclasses.replace(spec, files={**spec.files, **files})
