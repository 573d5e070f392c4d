"""The paper's transfer methods (Weller, Seppi and Gardner, ACL 2022; docs/PROTOCOL.md) as recipes:
single, stilts, mtl, mtl_all. `plan` lists a configuration's `Job`s, each with the runs it needs first
(STILTs' supports, dynamic sampling's references) published as data; `select_support` and `carries_head`
are the rules STILTs starts by. tl/study/jobs.py trains the jobs into the results folder.
Imports tl.heads, tl.runs, tl.tasks, tl.train.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from tl.heads import HeadSpec, label_count_key
from tl.runs import builds_on_singles, run_id
from tl.tasks import GLUE_TASKS, get_task
from tl.train import TrainSettings, arg

MODES = ("single", "stilts", "mtl", "mtl_all")
SELECTIONS = ("max", "median", "mean-closest")
PAPER_SEEDS = (42, 544460, 801760, 428404, 257803)
# The authors' pair script visits pairs i < j of this array (orionw/MTLvsIFT bin/glue/execute_glue); a
# set's quotas give a rounding shortfall to its first task, so the order is part of the run.
AUTHORS_ORDER = ("CoLA", "SST-2", "MRPC", "QQP", "STS-B", "MNLI", "QNLI", "RTE", "WNLI")


@dataclass
class RunConfig:
    """What to run and where; together with TrainSettings, every flag of `tools/train.py`."""

    mode: str = arg("single", "single, stilts, mtl or mtl_all", choices=MODES)
    tasks: tuple[str, ...] = arg((), "the target first, then the support(s); mtl_all: default all nine")
    model: str = arg("distilroberta-base", "a model folder, an installed model package (all-MiniLM-L6-v2) or a hub name")
    data_dir: str = arg("data/glue", "folder with one sub-folder per task (python tools/download_glue.py)")
    results_dir: str = arg("results", "every run writes <results-dir>/<run_id>/")
    cache_dir: str = arg("", "token cache folder; default $TL_CACHE or ~/.cache/tl/tokens")
    seeds: tuple[int, ...] = arg(PAPER_SEEDS, "seeds, run one after the other")
    max_len: int = arg(128, "tokens per example; pairs are truncated longest-first")
    limit_train: int = arg(0, "use a seeded subsample of N training examples of every task (quick runs); 0: all")
    target_size: int = arg(0, "subsample the target's training set to N examples (size experiments); 0: all")
    support_size: str = arg("", "subsample each support to N examples or K times the target's size ('2x', '0.5x')")
    support_selection: str = arg("max", "stilts: which support model to continue from", choices=SELECTIONS)
    support_seeds: tuple[int, ...] = arg(PAPER_SEEDS, "seeds of the single runs STILTs and dynamic sampling build on")
    reference_scores: str = arg("", "dynamic sampling: JSON {task: dev score x100}; default: the single runs' mean")
    device: str = arg("", "cpu, cuda, cuda:1, ...; default: cuda when available")

    def __post_init__(self):
        in_range = lambda seeds: bool(seeds) and all(0 <= s < 2**32 for s in seeds)
        rules = {"mode": (self.mode in MODES, f"one of {', '.join(MODES)}"),  # flag: (valid, what it must be)
                 "support_selection": (self.support_selection in SELECTIONS, f"one of {', '.join(SELECTIONS)}"),
                 "seeds": (in_range(self.seeds), "a list of integers in [0, 2^32)"),
                 "support_seeds": (in_range(self.support_seeds), "a list of integers in [0, 2^32)"),
                 # [CLS] a [SEP] b [SEP] (RoBERTa: <s> a </s></s> b </s>) and text on both sides
                 "max_len": (self.max_len >= 8, "at least 8"), "results_dir": (bool(self.results_dir), "a folder"),
                 "limit_train": (self.limit_train >= 0, ">= 0 (0: all)"),
                 "target_size": (self.target_size >= 0, ">= 0 (0: all)")}
        for name, (ok, rule) in rules.items():
            if not ok:
                raise ValueError(f"--{name.replace('_', '-')} must be {rule}, got {getattr(self, name)!r}")
        names = [get_task(t).name for t in self.tasks]  # unknown names fail here, with the known ones
        given = ",".join(names) or "none"
        if len(set(names)) != len(names):
            raise ValueError(f"--tasks lists a task twice ({given}): the target cannot be its own support")
        if self.mode == "single" and len(names) != 1:
            raise ValueError(f"--mode single trains one task; got --tasks {given}")
        if self.mode in ("stilts", "mtl") and len(names) < 2 or self.mode == "stilts" and len(names) > 2:
            rule = "needs a target and a support" if len(names) < 2 else "takes exactly one support"
            raise ValueError(f"--mode {self.mode} {rule}: --tasks TARGET,SUPPORT (got {given})")
        parse_support_size(self.support_size)

    @property
    def task_names(self) -> list[str]:
        return [get_task(t).name for t in self.tasks] or [t.name for t in GLUE_TASKS if self.mode == "mtl_all"]


def parse_support_size(text: str) -> tuple[str, float]:
    """'' -> ('', 0); '5000' -> ('n', 5000); '2x' / '0.5x' / '1/3x' -> ('x', K)."""
    text = text.strip()
    if not text:
        return "", 0
    try:
        if text.endswith("x"):
            num, _, den = text[:-1].partition("/")
            k = float(num) / float(den or 1)
            if k > 0:
                return "x", k
        elif int(text) > 0:
            return "n", int(text)
    except (ValueError, ZeroDivisionError):
        pass
    raise ValueError(f"--support-size must be a count (5000) or a multiple of the target size (2x, 0.5x, 1/3x), got {text!r}")


def resolve_sampler(mode: str, sampler: str, protocol: str) -> str:
    """The sampler a run uses. Under authors, "auto" is `uniform` for pairs (bin/glue/execute_glue) and
    `size` for MTL-ALL (Table 1 reads the size-sampled run); their "dynamic" is `dynamic-softmax`."""
    if mode in ("single", "stilts"):
        return "size"
    if sampler == "auto":
        return "dynamic" if protocol == "tl" else ("size" if mode == "mtl_all" else "uniform")
    return "dynamic-softmax" if protocol == "authors" and sampler == "dynamic" else sampler


def train_sizes(cfg: RunConfig, train_size: Callable[[str], int], target: str, supports: list[str]) -> dict[str, int]:
    """Training examples per task after --limit-train, --target-size, --support-size (`train_size`: full sizes)."""
    def full(task):
        return min(train_size(task), cfg.limit_train or train_size(task))

    sizes = {target: min(full(target), cfg.target_size or full(target))}
    kind, value = parse_support_size(cfg.support_size)
    cap = {"n": value, "x": max(1, round(value * sizes[target]))}.get(kind)
    return {**sizes, **{s: min(full(s), cap or full(s)) for s in supports}}


@dataclass(frozen=True)
class Job:
    """One training run. `run(job.cfg, job.settings)` trains exactly this job (its needs complete)."""

    run_id: str  # the folder this job trains
    mode: str
    target: str
    supports: tuple[str, ...]
    seed: int
    cfg: RunConfig  # mode, tasks and seeds=(seed,) of this job
    settings: TrainSettings  # sampler resolved
    needs: tuple[str, ...]  # run ids that must be complete first (STILTs' supports, dynamic references)
    outputs: tuple[str, ...]  # run ids whose record.json this job writes, its own first


def _make_job(cfg: RunConfig, settings: TrainSettings, mode: str, tasks: list[str], seed: int) -> Job:
    settings = replace(settings, sampler=resolve_sampler(mode, settings.sampler, settings.protocol))
    written = [tasks]
    if mode == "mtl_all":  # the joint run, then one record per task, scored at its own best checkpoint
        written = [tasks, *([t] for t in tasks)]
    elif settings.protocol == "authors" and mode == "mtl" and not (cfg.target_size or cfg.support_size):
        # trained once, read for each task (execute_glue), unless a size flag makes the target special
        tasks = [t for t in AUTHORS_ORDER if t in tasks] + sorted(t for t in tasks if t not in AUTHORS_ORDER)
        written = [[t, *(x for x in tasks if x != t)] for t in tasks]
    cfg = replace(cfg, mode=mode, tasks=tuple(tasks), seeds=(seed,))
    outputs = tuple(run_id(mode, ts, seed, sampler=settings.sampler, schedule=settings.schedule,
                           protocol=settings.protocol, limit_train=cfg.limit_train, target_size=cfg.target_size,
                           support_size=cfg.support_size) for ts in written)
    return Job(outputs[0], mode, tasks[0], tuple(tasks[1:]), seed, cfg, settings, (), outputs)


def plan(cfg: RunConfig, settings: TrainSettings, train_size: Callable[[str], int]) -> list[Job]:
    """The jobs of every seed of `cfg`, each after the jobs it needs, each once (`train_size`: full sizes)."""
    jobs: dict[str, Job] = {}
    for seed in cfg.seeds:
        job = _make_job(cfg, settings, cfg.mode, cfg.task_names, seed)
        sizes = train_sizes(job.cfg, train_size, job.target, list(job.supports))
        built_on = job.supports if job.mode == "stilts" else sizes
        if not builds_on_singles(job.mode, job.settings.sampler, job.cfg.reference_scores):
            built_on = ()
        full = train_sizes(replace(job.cfg, target_size=0, support_size=""), train_size, job.target, [*job.supports])
        # the single runs of each task at the size this run gives it (their --target-size if smaller)
        deps = [_make_job(replace(job.cfg, support_size="", target_size=sizes[t] if sizes[t] < full[t] else 0),
                          settings, "single", [t], s) for t in built_on for s in cfg.support_seeds]
        for d in [*deps, replace(job, needs=tuple(d.run_id for d in deps))]:
            jobs.setdefault(d.run_id, d)
    return list(jobs.values())


def head_spec(task: str) -> HeadSpec:
    spec = get_task(task)
    return HeadSpec(spec.name, 1 if spec.is_regression else spec.num_labels, spec.is_regression)


def select_support(records: list[dict], how: str) -> dict:
    """The support run to continue from: `max` (the paper's), `median` (the lower middle) or `mean-closest`."""
    scores = np.array([r["score"] for r in records])
    pick = {"max": np.argmax, "median": lambda x: np.argsort(x, kind="stable")[(len(x) - 1) // 2],
            "mean-closest": lambda x: np.argmin(np.abs(x - x.mean()))}
    if how not in pick:
        raise ValueError(f"unknown support selection {how!r}; choose one of {', '.join(SELECTIONS)}")
    return records[int(pick[how](scores))]


def carries_head(target: str, support: str, protocol: str) -> bool:
    """Whether STILTs starts the target's head from the support's: same label strings under tl, same
    label count under authors (their shared `classifier` / `mclassifier` / `regression` heads)."""
    if protocol == "authors":
        return label_count_key(head_spec(target)) == label_count_key(head_spec(support))
    return get_task(target).labels == get_task(support).labels
