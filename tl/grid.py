"""Experiment plans over the recipes: the paper's whole study as one resumable, shardable command.

Weller, Seppi and Gardner (ACL 2022), protocol in `shared/paper/PROTOCOL.md`; counts derived in
`docs/GRID.md`. Two plans:
- `paper`: single-task baselines x seeds; every ordered (target, support) pair x {stilts, mtl} x seeds;
           mtl_all x {uniform, size, dynamic} x seeds (one joint run writes one record per task).
- `size`:  Figure 2: target QNLI with support MNLI subsampled to K x the target's size, K in
           {1/3, 1/2, 1, 2, 3}, with the target full and halved; stilts and mtl, and the single runs
           they need (the target at each size; the support at each subsampled size, STILTs' supports).

A plan is a list of `Run`s in dependency order. Run ids are `tl.recipes.run_id`'s, so a grid and
hand-run `tools/train.py` commands share one results folder; each run is executed by
`tl.recipes.run(run.cfg, run.settings)`. Dependencies: a STILTs run needs its support's single runs
(over --support-seeds) complete, since the recipe picks the best of them; a dynamic-sampling MTL run
needs every planned single run of its tasks complete, since its reference scores are their mean.

Execution (`execute`): complete runs are skipped, partial ones resumed by the recipes. A run is
taken under a lock file `<results>/<run_id>/grid.lock` created with O_CREAT | O_EXCL (pid, host
inside), so two workers or two machines on a shared folder never train the same run; the lock of a
dead process on this host is taken over. `--shard i/n` owns every n-th run of the plan; a shard runs
a missing dependency itself unless another process holds its lock, in which case it waits (it never
waits on a shard that has not started). A failed run is reported and the grid goes on; runs that
depend on it are skipped. Cost (`estimate`): examples to process and hours at a useful-token
throughput (`tools/bench.py train --json`, or a number).
"""
from __future__ import annotations

import json
import math
import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from itertools import permutations
from pathlib import Path

from tqdm.auto import tqdm

from tl.cli import arg
from tl.recipes import RunConfig, read_record, run, run_id, support_config, train_sizes
from tl.tasks import GLUE_TASKS, get_task, read_split
from tl.train import TrainSettings, resolve_dir

PLANS = ("paper", "size")
METHODS = ("single", "stilts", "mtl", "mtl_all")
MTL_ALL_SAMPLERS = ("uniform", "size", "dynamic")  # the paper's Table 2
# mean tokens per training example (WordPiece, [CLS]/[SEP] included, max 128), PROTOCOL.md's figures
# for the full GLUE training sets; used when the train file or the model's tokenizer is not at hand
MEAN_TOKENS = {"CoLA": 11, "SST-2": 13, "STS-B": 28, "QQP": 31, "WNLI": 37, "MNLI": 39, "QNLI": 49, "MRPC": 53,
               "RTE": 67}
# official GLUE dev sizes (MNLI: matched + mismatched), when the dev files are not at hand
DEV_SIZES = {"MNLI": 9815 + 9832, "QQP": 40430, "QNLI": 5463, "SST-2": 872, "CoLA": 1043, "STS-B": 1500,
             "MRPC": 408, "RTE": 277, "WNLI": 71}
EVAL_COST = 1 / 3  # a forward pass costs about a third of a training step (forward + backward = 3 x forward)
LOCK_NAME = "grid.lock"
EVENTS_NAME = "grid-events.jsonl"


@dataclass
class GridConfig:
    """The grid's own flags; the run flags are RunConfig's and TrainSettings' (tools/grid.py)."""

    plan: str = arg("paper", "paper (singles, the STILTs/MTL matrix, MTL-ALL) or size (Figure 2)", choices=PLANS)
    methods: tuple[str, ...] = arg(METHODS, "methods of the plan to include (their dependencies always are)")
    mtl_all_samplers: tuple[str, ...] = arg(MTL_ALL_SAMPLERS, "paper plan: samplers of the MTL-ALL runs")
    size_k: tuple[str, ...] = arg(("1/3", "1/2", "1", "2", "3"), "size plan: K = support size / target size")
    target_fractions: tuple[float, ...] = arg((1.0, 0.5), "size plan: fractions of the target's training set")
    dry_run: bool = arg(False, "list every run with its status and cost, then stop")
    throughput: str = arg("", "for the cost: a JSON file of `tools/bench.py train --json FILE`, or useful tokens/s")
    workers: int = arg(1, "runs at once on this machine: 1 = in this process, N > 1 = N subprocesses")
    shard: str = arg("", "i/n: take only part i (0-based) of n of the plan, e.g. $SLURM_ARRAY_TASK_ID/8")
    emit_slurm: str = arg("", "write an sbatch array script running the grid in --slurm-tasks shards, then stop")
    slurm_tasks: int = arg(8, "--emit-slurm: number of array tasks (shards)")
    sbatch: str = arg("", "--emit-slurm: extra sbatch options, e.g. '--gres=gpu:1 --time=48:00:00'")
    poll: float = arg(30.0, "seconds between checks while waiting for a run that another process holds")

    def __post_init__(self):
        for name, allowed, given in (("--methods", METHODS, self.methods),
                                     ("--mtl-all-samplers", MTL_ALL_SAMPLERS, self.mtl_all_samplers)):
            bad = [x for x in given if x not in allowed]
            if bad or not given:
                raise ValueError(f"{name}: expected a comma list of {', '.join(allowed)}, "
                                 f"got {','.join(given) or 'nothing'}")
        for k in self.size_k:
            parse_k(k)
        if not self.target_fractions or not all(0 < f <= 1 for f in self.target_fractions):
            raise ValueError(f"--target-fractions: each must be in (0, 1], got {self.target_fractions}")
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.slurm_tasks < 1:
            raise ValueError(f"--slurm-tasks must be at least 1, got {self.slurm_tasks}")
        parse_shard(self.shard)


def parse_k(text: str) -> float:
    """'1/3' -> 0.333..., '2' -> 2.0 (an 'x' suffix is allowed)."""
    try:
        num, _, den = text.strip().rstrip("x").partition("/")
        k = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        k = 0.0
    if not k > 0:
        raise ValueError(f"--size-k: {text!r} is not a positive number or fraction (1/3, 0.5, 2)")
    return k


def parse_shard(text: str) -> tuple[int, int]:
    """'' -> (0, 1); '2/8' -> (2, 8); i must be in 0..n-1."""
    if not text:
        return 0, 1
    i, sep, n = text.partition("/")
    try:
        i, n = int(i), int(n)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text}: expected i/n with 0 <= i < n (0-based, as $SLURM_ARRAY_TASK_ID/n)")
    return i, n


# ---------------------------------------------------------------------------------------------
# plans


@dataclass
class Run:
    """One training run of a plan: `tl.recipes.run(cfg, settings)` trains it (cfg.seeds == (seed,))."""

    run_id: str
    mode: str
    target: str
    supports: tuple[str, ...]
    seed: int
    cfg: RunConfig
    settings: TrainSettings
    sizes: dict  # task -> training examples used (after --limit-train / --target-size / --support-size)
    deps: tuple[str, ...] = ()  # run ids that must be complete first
    outputs: tuple[str, ...] = ()  # further records it writes (mtl_all: one per task)


class _Counts:
    """Stands in for recipes.Context in `recipes.train_sizes`, which only asks len(split(task, 'train')),
    so the grid sizes runs with the recipes' own rule."""

    def __init__(self, counts: dict):
        self.counts = counts

    def split(self, task: str, name: str):
        return range(self.counts[task])


def _count_rows(spec, data_dir, splits) -> int | None:
    """Examples in the task's files for `splits` under data_dir (what the recipes will read); None
    when a file is missing or unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # malformed-line warnings: the count is what matters here
            return sum(len(read_split(spec, data_dir, s)) for s in splits)
    except (FileNotFoundError, ValueError):
        return None


def train_counts(tasks, data_dir) -> dict:
    """Training examples per task: counted in --data-dir's train file, else the official size from
    the registry."""
    out = {}
    for t in tasks:
        spec = get_task(t)
        out[spec.name] = _count_rows(spec, data_dir, ["train"])
        if out[spec.name] is None:
            if spec.train_size is None:
                raise ValueError(f"task {spec.name}: no train file under --data-dir {data_dir} and no "
                                 f"train_size in its spec; download it or add train_size")
            out[spec.name] = spec.train_size
    return out


def _make(base: RunConfig, settings: TrainSettings, counts: dict, mode: str, target: str, supports=(),
          seed: int = 0, **cfg_changes) -> Run:
    cfg = replace(base, mode=mode, tasks=(target, *supports), seeds=(seed,), **cfg_changes)
    rid = run_id(mode, target, list(supports), seed, cfg, settings)
    sizes = train_sizes(cfg, _Counts(counts), target, list(supports))
    return Run(rid, mode, target, tuple(supports), seed, cfg, settings, sizes)


def _support_singles(stilts: Run, counts: dict) -> list[Run]:
    """The single runs `recipes.run_stilts` continues from, under the ids it gives them
    (`recipes.support_config`)."""
    support = stilts.supports[0]
    cfg = support_config(stilts.cfg, _Counts(counts), stilts.target, support)
    return [_make(cfg, stilts.settings, counts, "single", support, (), s) for s in stilts.cfg.support_seeds]


def make_plan(grid: GridConfig, base: RunConfig, settings: TrainSettings, counts: dict | None = None) -> list[Run]:
    """The runs of `grid.plan` in dependency order (each run after every run it depends on).
    `base` carries the shared run flags (its mode, tasks and seeds are replaced per run); `counts`
    (task -> training examples in the file) defaults to `train_counts` over --data-dir."""
    if grid.plan == "paper":
        tasks = [get_task(t).name for t in base.tasks] or [t.name for t in GLUE_TASKS]
    else:
        tasks = [get_task(t).name for t in base.tasks] or ["QNLI", "MNLI"]
        if len(tasks) != 2:
            raise ValueError(f"--plan size takes --tasks TARGET,SUPPORT (default qnli,mnli), got {','.join(tasks)}")
    counts = counts if counts is not None else train_counts(tasks, base.data_dir)
    want = set(grid.methods)
    singles, others = {}, []

    def add_single(r: Run):
        singles.setdefault(r.run_id, r)

    def add_stilts(r: Run):
        needed = _support_singles(r, counts)
        for s in needed:
            add_single(s)
        r.deps = tuple(s.run_id for s in needed)
        others.append(r)

    if grid.plan == "paper":
        for t in tasks:
            for s in base.seeds:
                if "single" in want:
                    add_single(_make(base, settings, counts, "single", t, (), s))
        for target, support in permutations(tasks, 2):
            for s in base.seeds:
                if "stilts" in want:
                    add_stilts(_make(base, settings, counts, "stilts", target, (support,), s))
                if "mtl" in want:
                    others.append(_make(base, settings, counts, "mtl", target, (support,), s))
        if "mtl_all" in want and len(tasks) > 1:
            for sampler in grid.mtl_all_samplers:
                for s in base.seeds:
                    r = _make(base, replace(settings, sampler=sampler), counts, "mtl_all", tasks[0], tuple(tasks[1:]),
                              s)
                    r.outputs = tuple(run_id("mtl_all", t, [], s, r.cfg, r.settings) for t in tasks)
                    others.append(r)
    else:
        target, support = tasks
        full = train_sizes(base, _Counts(counts), target, [])[target]
        for f in grid.target_fractions:
            n = 0 if f == 1 else max(1, int(full * f))
            for s in base.seeds:
                if "single" in want:
                    add_single(_make(base, settings, counts, "single", target, (), s, target_size=n))
            for k in grid.size_k:
                for s in base.seeds:
                    sup = f"{k.strip().rstrip('x')}x"
                    if "stilts" in want:
                        add_stilts(_make(base, settings, counts, "stilts", target, (support,), s, target_size=n,
                                         support_size=sup))
                    if "mtl" in want:
                        others.append(_make(base, settings, counts, "mtl", target, (support,), s, target_size=n,
                                            support_size=sup))

    # dynamic sampling: the references are the mean of every complete single run of each task with
    # this model (recipes.reference_scores), so all planned ones must be done, and at least the
    # plan's seeds of each task must be planned
    dynamic = [r for r in others if r.mode in ("mtl", "mtl_all") and r.settings.sampler.startswith("dynamic")
               and not base.reference_scores]
    for t in dict.fromkeys(t for r in dynamic for t in (r.target, *r.supports)):  # ordered: shards must agree
        if not any(x.target == t for x in singles.values()):
            for s in base.seeds:
                add_single(_make(base, settings, counts, "single", t, (), s))
    for r in dynamic:
        r.deps = tuple(x.run_id for x in singles.values() if x.target in (r.target, *r.supports))
    plan = list(singles.values()) + others
    ids = [r.run_id for r in plan]
    if len(set(ids)) != len(ids):
        raise AssertionError("two planned runs share a run id")  # a bug in the plan, not bad input
    return plan


def shard_runs(plan: list[Run], i: int, n: int) -> list[Run]:
    """Part i of n: every n-th run of the plan from the i-th. Round robin over the dependency order
    spreads each phase (singles first) over the shards; it depends only on the flags, so every
    machine computes the same split."""
    return plan[i::n]


# ---------------------------------------------------------------------------------------------
# status and cost


def run_status(results: Path, r: Run) -> str:
    """'complete' (every record it writes is complete), 'partial' (a record or a checkpoint exists:
    the recipes resume it) or 'to do'."""
    records = []
    for rid in (r.run_id, *r.outputs):
        try:
            records.append(read_record(Path(results) / rid))
        except (OSError, json.JSONDecodeError):
            records.append({"status": "unreadable"})
    if all(rec is not None and rec.get("status") == "complete" for rec in records):
        return "complete"
    if any(rec is not None for rec in records) or resolve_dir(Path(results) / r.run_id / "checkpoint"):
        return "partial"
    return "to do"


@dataclass
class Throughput:
    """Useful (non-pad) training tokens per second, per task; `default` for tasks not measured."""

    per_task: dict = field(default_factory=dict)
    default: float = 0.0
    source: str = ""


def read_throughput(text: str) -> Throughput | None:
    """`--throughput`: a number (useful tokens/s for every task) or the JSON of
    `tools/bench.py train --json FILE`: {"model", "device", "tasks": {TASK: {"tl": {"useful_tokens_per_second": x}}}}.
    Tasks the file lacks get the mean over those it has."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None:
        if not value > 0:
            raise ValueError(f"--throughput {text}: useful tokens per second must be positive")
        return Throughput({}, value, f"{value:g} useful tokens/s (given)")
    path = Path(text)
    expected = '{"model": ..., "device": ..., "tasks": {"RTE": {"tl": {"useful_tokens_per_second": x}}, ...}}'
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--throughput {path}: no such file (write it with `python tools/bench.py train "
                                f"--json {path}`, or give useful tokens/s as a number)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--throughput {path}: not readable JSON ({e}); expected {expected}") from None
    try:
        per_task = {get_task(t).name: float(v["tl"]["useful_tokens_per_second"]) for t, v in data["tasks"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"--throughput {path}: missing or bad field ({e}); expected {expected}") from None
    if not per_task or not all(v > 0 for v in per_task.values()):
        raise ValueError(f"--throughput {path}: no positive useful_tokens_per_second; expected {expected}")
    default = sum(per_task.values()) / len(per_task)
    device = data.get("machine") or data.get("device", "?")
    return Throughput(per_task, default, f"{path} (model {data.get('model', '?')}, device {device})")


def _local_model(name: str) -> Path | None:
    """The model folder if it is on this machine (a folder, an installed package, a cached hub
    download); None rather than download it for an estimate."""
    from tl import hub

    try:
        if Path(name).expanduser().is_dir() or name.lower() in hub.PACKAGES:
            return hub.resolve_model(name)
        folder = hub.model_cache(hub.HUB_ALIASES.get(name.lower(), name))
        return folder if folder.is_dir() and not hub.missing(folder) else None
    except (OSError, ValueError):
        return None


def mean_tokens(tasks, data_dir, model: str, max_len: int, sample: int = 2000) -> tuple[dict, str]:
    """Mean tokens per training example per task, and how they were found: the model's tokenizer over
    up to `sample` evenly spaced examples of the train file, else the MEAN_TOKENS table (max_len/2
    for a task it lacks)."""
    folder, tok = _local_model(model), None
    if folder is not None:
        from tl.tokenizer import Tokenizer

        tok = Tokenizer.from_checkpoint(folder)
    out, how = {}, set()
    for t in tasks:
        spec = get_task(t)
        try:
            if tok is None:
                raise FileNotFoundError
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ex = read_split(spec, data_dir, "train")
            pick = range(0, len(ex), max(1, len(ex) // sample))
            encoded = tok.encode_batch([ex.text_a[i] for i in pick],
                                       None if ex.text_b is None else [ex.text_b[i] for i in pick], max_len)
            out[spec.name] = sum(len(ids) for ids, _ in encoded) / len(encoded)
            how.add("measured on the train files")
        except (FileNotFoundError, ValueError):
            out[spec.name] = min(MEAN_TOKENS.get(spec.name, max_len / 2), max_len)
            how.add("PROTOCOL.md's table")
    return out, " and ".join(sorted(how))


def dev_counts(tasks, data_dir) -> dict:
    """Dev examples evaluated per task (every dev split), counted in the files, else DEV_SIZES."""
    out = {}
    for t in tasks:
        spec = get_task(t)
        n = _count_rows(spec, data_dir, spec.eval_splits)
        out[spec.name] = DEV_SIZES.get(spec.name, 1000) if n is None else n
    return out


def run_cost(r: Run, dev: dict) -> tuple[dict, dict]:
    """(training examples, dev examples evaluated) per task, following fit()'s step count: an epoch
    is the sum of the trained tasks' sizes; tasks are mixed in proportion to their sizes (the
    first epoch of dynamic sampling; later epochs shift the mix, not the total)."""
    trained = [r.target] if r.mode == "stilts" else [r.target, *r.supports]  # STILTs' supports are their own runs
    sizes = {t: r.sizes[t] for t in trained}
    total, st = sum(sizes.values()), r.settings
    per_epoch = math.ceil(total / st.batch_size)
    steps = math.ceil(st.epochs * per_epoch) if st.epochs > 0 else st.max_steps
    if st.max_steps > 0:
        steps = min(steps, st.max_steps)
    examples = min(steps * st.batch_size, math.ceil(st.epochs * total) if st.epochs > 0 else steps * st.batch_size)
    evals = max(1, steps * st.evals_per_epoch // per_epoch)
    return ({t: examples * n / total for t, n in sizes.items()}, {t: evals * dev[t] for t in trained})


def estimate(plan: list[Run], tokens: dict, dev: dict, throughput: Throughput | None) -> list[dict]:
    """Per run: training examples, tokens (training + dev tokens x EVAL_COST) and hours (None
    without a throughput)."""
    out = []
    for r in plan:
        train, evaluated = run_cost(r, dev)
        work = {t: (train[t] + EVAL_COST * evaluated[t]) * tokens[t] for t in train}
        hours = None
        if throughput is not None:
            hours = sum(w / throughput.per_task.get(t, throughput.default) for t, w in work.items()) / 3600
        out.append({"examples": sum(train.values()), "tokens": sum(work.values()), "hours": hours})
    return out


def describe_plan(plan: list[Run], results: Path, costs: list[dict], throughput: Throughput | None,
                  header: str = "") -> str:
    """The dry-run listing: one line per run (status, id, examples, hours, dependencies), then the totals."""
    statuses = [run_status(results, r) for r in plan]
    done = {r.run_id for r, s in zip(plan, statuses) if s == "complete"}
    width = max([len(r.run_id) for r in plan] + [6])
    lines = [header] if header else []
    lines.append(f"{'status':<9} {'run':<{width}} {'examples':>13} {'hours':>9}  waits for")
    for r, s, c in zip(plan, statuses, costs):
        waiting = [d for d in r.deps if d not in done]
        hours = "?" if c["hours"] is None else f"{c['hours']:.2f}"
        lock = live_lock(results / r.run_id / LOCK_NAME)
        note = f"  [locked by pid {lock.get('pid')} on {lock.get('host')}]" if lock else ""
        waits = f"{len(waiting)} runs" if waiting else "-"
        lines.append(f"{s:<9} {r.run_id:<{width}} {c['examples']:>13,.0f} {hours:>9}  {waits}{note}")
    n = {k: statuses.count(k) for k in ("complete", "partial", "to do")}
    records = len(plan) + sum(len(r.outputs) for r in plan)
    left = [c for c, s in zip(costs, statuses) if s != "complete"]
    if throughput is None:
        hours = "hours: pass --throughput FILE.json (python tools/bench.py train --json FILE) or tokens/s"
    else:
        hours = (f"{sum(c['hours'] for c in costs):,.1f} hours in all, {sum(c['hours'] for c in left):,.1f} left, "
                 f"at {throughput.source}")
    lines.append(f"total: {len(plan)} runs ({n['complete']} complete, {n['partial']} partial, {n['to do']} to do), "
                 f"{records} records; {sum(c['examples'] for c in costs):,.0f} training examples; {hours}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# locks and events


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


# a lock file still empty (or torn) this long after its creation lost its writer between O_EXCL and write
TORN_LOCK_SECONDS = 10.0


def lock_owner(path: Path) -> dict | None:
    """The lock's content ({pid, host, time, token}) or None when there is no lock; an empty or torn
    file reads as {pid: None, host: None, mtime}."""
    try:
        text = Path(path).read_text()
        if text:
            return json.loads(text)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        pass
    try:
        return {"pid": None, "host": None, "mtime": Path(path).stat().st_mtime}
    except FileNotFoundError:
        return None


def _stale(owner: dict, host: str) -> bool:
    """A lock of a dead process on this host, or one whose writer died before filling it in."""
    if owner.get("pid") is None:
        return time.time() - owner.get("mtime", time.time()) > TORN_LOCK_SECONDS
    return owner.get("host") == host and not _pid_alive(int(owner["pid"]))


def live_lock(path: Path) -> dict | None:
    """The lock's owner unless there is no lock or it is stale."""
    owner = lock_owner(path)
    if owner and _stale(owner, socket.gethostname()):
        return None
    return owner


def acquire_lock(path: Path) -> str | None:
    """Take the lock file atomically (O_CREAT | O_EXCL); returns a token for `release_lock`, or None
    when a live process holds it. A lock left by a dead process on this host is taken over: it is
    renamed away first (one rename wins), so two processes cannot both take it over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    for _ in range(3):
        token = uuid.uuid4().hex
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = lock_owner(path)
            if owner is None:
                continue  # released meanwhile: try again
            if not _stale(owner, host):
                return None
            stale = path.with_name(f"{path.name}.stale-{os.getpid()}")
            try:
                os.replace(path, stale)
            except FileNotFoundError:
                continue  # another process took it over first
            if lock_owner(stale) != owner:  # we moved a fresh lock, not the stale one: put it back
                try:
                    os.link(stale, path)
                except FileExistsError:
                    pass
            stale.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": host, "time": time.time(), "token": token}, f)
        return token
    return None


def release_lock(path: Path, token: str) -> None:
    """Remove the lock if it is still ours."""
    owner = lock_owner(path)
    if owner is not None and owner.get("token") == token:
        Path(path).unlink(missing_ok=True)


def log_event(results: Path, run_id_: str, event: str, **extra) -> None:
    """Append one line to <results>/grid-events.jsonl: who started, finished or failed which run."""
    line = json.dumps({"run_id": run_id_, "event": event, "pid": os.getpid(), "host": socket.gethostname(),
                       "time": round(time.time(), 3), **extra}) + "\n"
    fd = os.open(Path(results) / EVENTS_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())  # one write with O_APPEND: lines of concurrent writers do not interleave
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# execution


def execute_locked(cfg: RunConfig, settings: TrainSettings, rid: str, outputs=()) -> str:
    """Train one run under its lock, in this process: 'done', 'busy' (another process holds it) or
    raises what the recipe raised. `outputs`: the further records the run writes (mtl_all)."""
    results = Path(cfg.results_dir)
    lock = results / rid / LOCK_NAME
    token = acquire_lock(lock)
    if token is None:
        return "busy"
    try:
        records = [read_record(results / x) for x in (rid, *outputs)]
        if all(rec is not None and rec.get("status") == "complete" for rec in records):
            return "done"  # finished by another process between our look and our lock
        log_event(results, rid, "start")
        try:
            run(cfg, settings)
        except BaseException as e:
            log_event(results, rid, "failed", error=f"{type(e).__name__}: {e}")
            raise
        log_event(results, rid, "done")
        return "done"
    finally:
        release_lock(lock, token)


def _to_json(r: Run) -> str:
    return json.dumps({"cfg": asdict(r.cfg), "settings": asdict(replace(r.settings, progress=False)),
                       "run_id": r.run_id, "outputs": list(r.outputs)})


def _from_json(cls, values: dict):
    """A RunConfig / TrainSettings from asdict() via JSON (lists back to tuples)."""
    return cls(**{f.name: tuple(values[f.name]) if isinstance(values[f.name], list) else values[f.name]
                  for f in fields(cls) if f.name in values})


def child_main(spec: str) -> int:
    """Entry point of a worker subprocess: one run from `_to_json`; exit 0 done, 3 busy, 1 failed."""
    d = json.loads(spec)
    try:
        status = execute_locked(_from_json(RunConfig, d["cfg"]), _from_json(TrainSettings, d["settings"]),
                                d["run_id"], d["outputs"])
    except Exception as e:  # the parent reports it from the log; the grid goes on
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    return 3 if status == "busy" else 0


def _spawn(r: Run, results: Path) -> tuple[subprocess.Popen, Path]:
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    log = results / r.run_id / "grid-worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", "import sys; from tl.grid import child_main; "
                                 "sys.exit(child_main(sys.argv[1]))", _to_json(r)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    return proc, log


def _last_error(log: Path) -> str:
    try:
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    errors = [x for x in lines if x.startswith("error:")]
    return (errors or lines or ["no output"])[-1].removeprefix("error: ")[:300]


def execute(plan: list[Run], own: list[Run], results: Path, workers: int = 1, poll: float = 30.0,
            progress: bool = True) -> dict:
    """Run `own` (a plan or a shard of it) to completion; see the module docstring for the rules.
    Returns {"complete": [...], "ran": [...], "failed": {id: reason}, "skipped": {id: reason}}."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    by_id = {r.run_id: r for r in plan}
    pending = [r.run_id for r in own]
    owned = set(pending)
    failed, skipped, ran, complete, waiting_said = {}, {}, [], [], set()
    running: dict = {}  # run id -> (Popen, log)
    status = lambda rid: run_status(results, by_id[rid])  # noqa: E731
    bar = tqdm(total=len(pending), desc="grid", unit="run", disable=not progress, dynamic_ncols=True)

    def finish(rid: str, outcome: str, reason: str = ""):
        if outcome in ("failed", "skipped"):
            (failed if outcome == "failed" else skipped)[rid] = reason
            bar.write(f"{outcome}: {rid}: {reason}")
        else:
            complete.append(rid)
            if outcome == "ran":
                ran.append(rid)
        if rid in owned:
            bar.update(1)
        bar.set_postfix(failed=len(failed) + len(skipped), refresh=False)

    def after_run(rid: str, error: str = ""):
        if not error and status(rid) != "complete":
            error = "finished without a complete record"
        finish(rid, "failed", error) if error else finish(rid, "ran")

    try:
        while pending or running:
            for rid, (proc, log) in list(running.items()):  # reap finished workers
                if proc.poll() is None:
                    continue
                del running[rid]
                if proc.returncode == 3:
                    pending.insert(0, rid)  # another process took it first: wait for it
                else:
                    after_run(rid, "" if proc.returncode == 0 else f"{_last_error(log)} (log: {log})")
            launched = False  # or a dependency queued: look again at once
            for rid in list(pending):
                if len(running) >= workers:
                    break
                r = by_id[rid]
                if status(rid) == "complete":
                    pending.remove(rid)
                    finish(rid, "complete")
                    continue
                broken = [d for d in r.deps if d in failed or d in skipped]
                if broken:
                    pending.remove(rid)
                    finish(rid, "skipped", f"its dependency {broken[0]} failed")
                    continue
                missing = [d for d in r.deps if status(d) != "complete"]
                if missing:
                    for d in missing:  # run a missing dependency here unless someone holds it
                        if d not in pending and d not in running and live_lock(results / d / LOCK_NAME) is None:
                            pending.insert(pending.index(rid), d)
                            bar.total += d not in owned
                            launched = True
                    continue
                owner = live_lock(results / rid / LOCK_NAME)
                if owner is not None:
                    if rid not in waiting_said:
                        waiting_said.add(rid)
                        bar.write(f"waiting: {rid} is held by pid {owner.get('pid')} on {owner.get('host')}")
                    continue
                pending.remove(rid)
                launched = True
                if workers == 1:
                    try:
                        outcome = execute_locked(r.cfg, r.settings, rid, r.outputs)
                    except Exception as e:
                        after_run(rid, f"{type(e).__name__}: {e}")
                    else:
                        pending.insert(0, rid) if outcome == "busy" else after_run(rid)
                    break  # statuses changed: start again from the top of the plan
                running[rid] = _spawn(r, results)
            if not launched and (pending or running):
                time.sleep(min(poll, 0.5) if running else poll)
    except KeyboardInterrupt:
        for proc, _ in running.values():
            proc.terminate()  # each worker releases its lock on the way out
        for proc, _ in running.values():
            proc.wait()
        raise
    finally:
        bar.close()
    return {"complete": complete, "ran": ran, "failed": failed, "skipped": skipped}


# ---------------------------------------------------------------------------------------------
# Slurm


_NOT_PASSED_ON = {"--emit-slurm": 1, "--slurm-tasks": 1, "--sbatch": 1, "--shard": 1, "--dry-run": 0,
                  "--workers": 1}


def slurm_script(argv: list[str], n: int, results: str, sbatch: str = "", cwd: Path | None = None) -> str:
    """An sbatch array script of n tasks, each running `tools/grid.py <argv> --shard $SLURM_ARRAY_TASK_ID/n`
    from `cwd` (default: here) with this Python (argv without the Slurm, shard, dry-run and workers flags)."""
    keep, i = [], 0
    while i < len(argv):
        flag = argv[i].split("=", 1)[0]
        if flag in _NOT_PASSED_ON:
            i += 1 + (_NOT_PASSED_ON[flag] if "=" not in argv[i] else 0)
            continue
        keep.append(argv[i])
        i += 1
    tool = Path(__file__).resolve().parents[1] / "tools" / "grid.py"
    options = "".join(f"#SBATCH {o}\n" for o in shlex.split(sbatch))
    command = shlex.join([sys.executable, str(tool), *keep])
    return (f"#!/bin/bash\n"
            f"# written by tools/grid.py --emit-slurm: submit with `sbatch <this file>`; submit it again to resume\n"
            f"#SBATCH --job-name=tl-grid\n#SBATCH --array=0-{n - 1}\n"
            f"#SBATCH --output={shlex.quote(str(Path(results).resolve() / 'slurm-%A_%a.out'))}\n{options}"
            f"set -euo pipefail\ncd {shlex.quote(str(Path(cwd or os.getcwd()).resolve()))}\n"
            f"{command} --shard \"${{SLURM_ARRAY_TASK_ID}}/{n}\"\n")
