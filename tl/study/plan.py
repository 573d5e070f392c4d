"""What the paper's study runs: the grid's plan and its statuses (docs/GRID.md; the protocol in
docs/PROTOCOL.md; the cost of a plan is tools/grid_cost.py's). Plans, each under `--protocol tl|authors`:
`paper` (singles, every ordered pair x {stilts, mtl}, MTL-ALL per sampler: Tables 1-2, Figure 1) and
`size` (Figure 2: a target with its support subsampled to K x its size, K in {1/3, 1/2, 1, 2, 3}).
The grid names a plan's points as `RunConfig`s; run ids, dependencies and outputs are the jobs of
`tl.recipes.plan`, deduplicated by run id and listed in dependency order.

Imports tl.recipes, tl.runs, tl.tasks, tl.train (public functions only).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from itertools import permutations
from pathlib import Path

from tl.recipes import Job, RunConfig, parse_support_size, plan, train_sizes
from tl.runs import read_record, resolve_dir
from tl.tasks import GLUE_TASKS, get_task, read_split
from tl.train import TrainSettings, arg

PLANS = ("paper", "size")
METHODS = ("single", "stilts", "mtl", "mtl_all")
MTL_ALL_SAMPLERS = ("uniform", "size", "dynamic")  # the paper's Table 2


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


# ---------------------------------------------------------------- plans
def count_rows(spec, data_dir, splits) -> int | None:
    """Examples in the task's files for `splits` under data_dir; None when a file is missing or unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # malformed-line warnings: the count is what matters here
            return sum(len(read_split(spec, data_dir, s)) for s in splits)
    except (FileNotFoundError, ValueError):
        return None


def train_counts(tasks, data_dir) -> dict:
    """Training examples per task: counted in --data-dir's train file, else the registry's official size."""
    out = {}
    for t in tasks:
        spec = get_task(t)
        out[spec.name] = count_rows(spec, data_dir, ["train"])
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
    # --sampler auto is the recipes' choice, but the paper and the authors ran the size plan with dynamic
    # sampling (under the authors' protocol the recipes make it their softmax variant)
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
    """The jobs of `grid.plan` in dependency order; `base` carries the shared run flags, `counts` (task
    -> training examples) defaults to `train_counts` over --data-dir."""
    tasks = plan_tasks(grid, base)
    counts = counts if counts is not None else train_counts(tasks, base.data_dir)
    train_size = lambda task: counts[get_task(task).name]  # noqa: E731
    jobs = [j for cfg, st in plan_points(grid, base, settings, tasks, train_size) for j in plan(cfg, st, train_size)]
    return dependency_order(jobs)


def shard_runs(jobs: list[Job], i: int, n: int) -> list[Job]:
    """Part i of n: every n-th job from the i-th, round robin over the dependency order (docs/GRID.md)."""
    return jobs[i::n]


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
