"""What the paper's study runs, and what it costs: the grid's plan, its statuses and its cost.

Weller, Seppi and Gardner (ACL 2022), protocol in `docs/PROTOCOL.md`; run counts derived in
`docs/GRID.md`. Two plans, each under `--protocol tl|authors`:
- `paper`: single-task baselines; every ordered (target, support) pair x {stilts, mtl}; MTL-ALL x
           {uniform, size, dynamic} samplers (Table 2; Table 1 reads `size`).
- `size`:  Figure 2: target QNLI with support MNLI subsampled to K x the target's size, K in
           {1/3, 1/2, 1, 2, 3}, with the target full and halved; stilts and mtl.

The grid names the points of a plan (method, target, support, sampler, size) as `RunConfig`s and
asks `tl.recipes.plan` for their jobs: run ids, dependencies (`needs`) and the records each writes
(`outputs`) are the recipes' own, so the grid re-derives none of them. Jobs are deduplicated by run id
(under the authors' protocol both targets of a pair share one MTL run) and listed in dependency order.

Imports tl.recipes, tl.runs, tl.sampling, tl.tasks, tl.tokenizer, tl.hub, tl.train (public functions only).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field, replace
from itertools import permutations
from pathlib import Path

from tl.train import arg
from tl.recipes import Job, RunConfig, parse_support_size, plan, train_sizes
from tl.runs import live_lock, lock_path, read_record, resolve_dir
from tl.sampling import authors_quotas, task_weights
from tl.tasks import GLUE_TASKS, get_task, read_split
from tl.train import TrainSettings

PLANS = ("paper", "size")
METHODS = ("single", "stilts", "mtl", "mtl_all")
MTL_ALL_SAMPLERS = ("uniform", "size", "dynamic")  # the paper's Table 2
# mean tokens per training example (WordPiece, [CLS]/[SEP] included, max 128), docs/PROTOCOL.md's
# figures for the full GLUE training sets; used when the train file or the model's tokenizer is not at hand
MEAN_TOKENS = {"CoLA": 11, "SST-2": 13, "STS-B": 28, "QQP": 31, "WNLI": 37, "MNLI": 39, "QNLI": 49, "MRPC": 53,
               "RTE": 67}
# official GLUE dev sizes (MNLI: matched + mismatched), when the dev files are not at hand
DEV_SIZES = {"MNLI": 9815 + 9832, "QQP": 40430, "QNLI": 5463, "SST-2": 872, "CoLA": 1043, "STS-B": 1500,
             "MRPC": 408, "RTE": 277, "WNLI": 71}
EVAL_COST = 1 / 3  # a forward pass costs about a third of a training step (forward + backward = 3 x forward)


@dataclass
class GridConfig:
    """The grid's own flags; the run flags are RunConfig's and TrainSettings' (tools/grid.py)."""

    plan: str = arg("paper", "paper (singles, the STILTs/MTL matrix, MTL-ALL) or size (Figure 2)", choices=PLANS)
    methods: tuple[str, ...] = arg(METHODS, "methods of the plan to include (their dependencies always are)")
    mtl_all_samplers: tuple[str, ...] = arg(MTL_ALL_SAMPLERS, "paper plan: samplers of the MTL-ALL runs "
                                            "(dynamic: --protocol authors runs their dynamic-softmax)")
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
        for k in self.size_k:  # a K becomes the runs' --support-size Kx
            try:
                parse_support_size(f"{k.strip().rstrip('x')}x")
            except ValueError:
                raise ValueError(f"--size-k: {k!r} is not a positive number or fraction (1/3, 0.5, 2)") from None
        if not self.target_fractions or not all(0 < f <= 1 for f in self.target_fractions):
            raise ValueError(f"--target-fractions: each must be in (0, 1], got {self.target_fractions}")
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.slurm_tasks < 1:
            raise ValueError(f"--slurm-tasks must be at least 1, got {self.slurm_tasks}")
        parse_shard(self.shard)


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


def plan_points(grid: GridConfig, base: RunConfig, settings: TrainSettings, tasks: list[str],
                train_size) -> list[tuple[RunConfig, TrainSettings]]:
    """The plan's points (method, target, support, sampler, size), each over all of base's seeds."""
    want = set(grid.methods)
    # --sampler auto is the recipes' choice (tl: dynamic; authors: uniform pairs, as their pair script),
    # except in the size plan, which both the paper and the authors ran with dynamic sampling (under
    # the authors' protocol the recipes make that their softmax variant)
    pair = replace(settings, sampler="dynamic") if grid.plan == "size" and settings.sampler == "auto" else settings
    out = []

    def point(mode: str, names: list[str], st: TrainSettings = settings, **sizes):
        return replace(base, mode=mode, tasks=tuple(names), **sizes), st

    if grid.plan == "paper":
        out += [point("single", [t]) for t in tasks if "single" in want]
        for target, support in permutations(tasks, 2):
            out += [point(m, [target, support], pair) for m in ("stilts", "mtl") if m in want]
        if "mtl_all" in want and len(tasks) > 1:
            out += [point("mtl_all", tasks, replace(settings, sampler=s)) for s in grid.mtl_all_samplers]
        return out
    target, support = tasks
    full = train_sizes(base, train_size, target, [])[target]  # after --limit-train
    for f in grid.target_fractions:
        n = 0 if f == 1 else max(1, int(full * f))
        if "single" in want:
            out.append(point("single", [target], target_size=n))
        for k in grid.size_k:
            sup = f"{k.strip().rstrip('x')}x"
            out += [point(m, [target, support], pair, target_size=n, support_size=sup)
                    for m in ("stilts", "mtl") if m in want]
    return out


def dependency_order(jobs: list[Job]) -> list[Job]:
    """Jobs deduplicated by run id, each after every job it needs (depth first, else in the recipes'
    order, which already lists needs first), so every machine computes the same list."""
    by_id, out = {}, {}
    for j in jobs:
        by_id.setdefault(j.run_id, j)

    def visit(rid: str, path=()):
        if rid not in by_id or rid in path:  # a bug in the recipes' plan, not bad input
            raise AssertionError(f"the recipes' plan {'lacks' if rid not in by_id else 'has a cycle through'} {rid}")
        if rid not in out:
            for d in by_id[rid].needs:
                visit(d, (*path, rid))
            out[rid] = by_id[rid]

    for rid in by_id:
        visit(rid)
    return list(out.values())


def plan_tasks(grid: GridConfig, base: RunConfig) -> list[str]:
    """The plan's tasks: --tasks, else all nine (paper) or QNLI, MNLI (size; target first)."""
    tasks = [get_task(t).name for t in base.tasks]
    if grid.plan == "paper":
        return tasks or [t.name for t in GLUE_TASKS]
    if len(tasks or ["QNLI", "MNLI"]) != 2:
        raise ValueError(f"--plan size takes --tasks TARGET,SUPPORT (default qnli,mnli), got {','.join(tasks)}")
    return tasks or ["QNLI", "MNLI"]


def make_plan(grid: GridConfig, base: RunConfig, settings: TrainSettings, counts: dict | None = None) -> list[Job]:
    """The jobs of `grid.plan` in dependency order. `base` carries the shared run flags (its mode
    and tasks are replaced per point); `counts` (task -> training examples in the file) defaults to
    `train_counts` over --data-dir."""
    tasks = plan_tasks(grid, base)
    counts = counts if counts is not None else train_counts(tasks, base.data_dir)
    train_size = lambda task: counts[get_task(task).name]  # noqa: E731
    jobs = [j for cfg, st in plan_points(grid, base, settings, tasks, train_size) for j in plan(cfg, st, train_size)]
    return dependency_order(jobs)


def shard_runs(jobs: list[Job], i: int, n: int) -> list[Job]:
    """Part i of n: every n-th job of the plan from the i-th. Round robin over the dependency order
    spreads each phase (singles first) over the shards; it depends only on the flags, so every
    machine computes the same split."""
    return jobs[i::n]


# ---------------------------------------------------------------------------------------------
# status and cost


def run_status(results: Path, job: Job) -> str:
    """'complete' (every record it writes is complete), 'partial' (a record or a checkpoint exists:
    the recipes resume it) or 'to do'."""
    records = []
    for rid in job.outputs:
        try:
            records.append(read_record(Path(results) / rid))
        except (OSError, ValueError):
            records.append({"status": "unreadable"})
    if all(rec is not None and rec.get("status") == "complete" for rec in records):
        return "complete"
    if any(rec is not None for rec in records) or resolve_dir(Path(results) / job.run_id / "checkpoint"):
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
            how.add("docs/PROTOCOL.md's table")
    return out, " and ".join(sorted(how))


def dev_counts(tasks, data_dir) -> dict:
    """Dev examples evaluated per task (every dev split), counted in the files, else DEV_SIZES."""
    out = {}
    for t in tasks:
        spec = get_task(t)
        n = _count_rows(spec, data_dir, spec.eval_splits)
        out[spec.name] = DEV_SIZES.get(spec.name, 1000) if n is None else n
    return out


def epoch_rows(job: Job, sizes: dict) -> dict[str, float]:
    """Training rows per task in one epoch, at the first epoch's weights (the dynamic samplers start
    by size; later epochs shift the mix). tl: one pass over the target (pairwise MTL) or over all
    tasks (MTL-ALL); authors: per-batch quotas q_t and min_t floor(n_t / q_t) groups of them."""
    trained = [job.target] if job.mode in ("single", "stilts") else [job.target, *job.supports]  # STILTs'
    n = {t: sizes[t] for t in trained}  # supports are their own jobs
    if len(n) == 1:
        return n
    st = job.settings
    w = task_weights("size" if st.sampler.startswith("dynamic") else st.sampler, n, temperature=st.temperature)
    if st.protocol == "authors":
        quotas = dict(zip(n, authors_quotas(list(w.values()), st.batch_size, uniform=st.sampler == "uniform")))
        groups = min(n[t] // q for t, q in quotas.items() if q > 0)
        return {t: float(q * groups) for t, q in quotas.items()}
    total = n[job.target] / w[job.target] if job.mode == "mtl" else sum(n.values())
    return {t: total * w[t] for t in n}


def run_cost(job: Job, train_size, dev: dict) -> tuple[dict, dict]:
    """(training examples, dev examples evaluated) per task, following fit()'s step count over
    `epoch_rows`; `train_size(task)` = the task's full training-set size."""
    rows = epoch_rows(job, train_sizes(job.cfg, train_size, job.target, list(job.supports)))
    total, st = sum(rows.values()), job.settings
    per_epoch = math.ceil(total / st.batch_size)
    steps = math.ceil(st.epochs * per_epoch) if st.epochs > 0 else st.max_steps
    if st.max_steps > 0:
        steps = min(steps, st.max_steps)
    examples = min(steps * st.batch_size, math.ceil(st.epochs * total) if st.epochs > 0 else steps * st.batch_size)
    evals = max(1, steps * st.evals_per_epoch // per_epoch)
    return {t: examples * r / total for t, r in rows.items()}, {t: evals * dev[t] for t in rows}


def estimate(jobs: list[Job], train_size, tokens: dict, dev: dict, throughput: Throughput | None) -> list[dict]:
    """Per job: training examples, tokens (training + dev tokens x EVAL_COST) and hours (None
    without a throughput)."""
    out = []
    for job in jobs:
        train, evaluated = run_cost(job, train_size, dev)
        work = {t: (train[t] + EVAL_COST * evaluated[t]) * tokens[t] for t in train}
        hours = None
        if throughput is not None:
            hours = sum(w / throughput.per_task.get(t, throughput.default) for t, w in work.items()) / 3600
        out.append({"examples": sum(train.values()), "tokens": sum(work.values()), "hours": hours})
    return out


def dry_run(grid: GridConfig, base: RunConfig, settings: TrainSettings, jobs: list[Job], counts: dict) -> str:
    """`--dry-run`'s text: a header, one line per job (status, id, examples, hours, needs not complete
    yet, a live lock), then the totals. `counts`: task -> training examples in the file."""
    results, throughput = Path(base.results_dir), read_throughput(grid.throughput)
    tasks = sorted({t for j in jobs for t in (j.target, *j.supports)})
    tokens, how = mean_tokens(tasks, base.data_dir, base.model, base.max_len)
    costs = estimate(jobs, lambda task: counts[get_task(task).name], tokens, dev_counts(tasks, base.data_dir),
                     throughput)
    statuses = [run_status(results, j) for j in jobs]
    done = {j.run_id for j, s in zip(jobs, statuses) if s == "complete"}
    width = max([len(j.run_id) for j in jobs] + [6])
    i, n = parse_shard(grid.shard)
    lines = [f"plan {grid.plan}, protocol {settings.protocol}" + (f", shard {i}/{n}" if n > 1 else "") +
             f": model {base.model}, seeds {','.join(map(str, base.seeds))}, results {results}; "
             f"tokens per example {how}", f"{'status':<9} {'run':<{width}} {'examples':>13} {'hours':>9}  waits for"]
    for j, s, c in zip(jobs, statuses, costs):
        waiting = [d for d in j.needs if d not in done]
        hours = "?" if c["hours"] is None else f"{c['hours']:.2f}"
        lock = live_lock(lock_path(results, j.run_id))
        note = f"  [locked by pid {lock.get('pid')} on {lock.get('host')}]" if lock else ""
        waits = f"{len(waiting)} runs" if waiting else "-"
        lines.append(f"{s:<9} {j.run_id:<{width}} {c['examples']:>13,.0f} {hours:>9}  {waits}{note}")
    count = {k: statuses.count(k) for k in ("complete", "partial", "to do")}
    records = len({rid for j in jobs for rid in j.outputs})
    left = [c for c, s in zip(costs, statuses) if s != "complete"]
    if throughput is None:
        hours = "hours: pass --throughput FILE.json (python tools/bench.py train --json FILE) or tokens/s"
    else:
        hours = (f"{sum(c['hours'] for c in costs):,.1f} hours in all, {sum(c['hours'] for c in left):,.1f} left, "
                 f"at {throughput.source}")
    lines.append(f"total: {len(jobs)} runs ({count['complete']} complete, {count['partial']} partial, "
                 f"{count['to do']} to do), {records} records; {sum(c['examples'] for c in costs):,.0f} "
                 f"training examples; {hours}")
    return "\n".join(lines)
