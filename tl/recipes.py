"""The paper's transfer methods as recipes over `fit()`: single, stilts, mtl, mtl_all; the jobs a
method needs, with their dependencies, published as data (`plan`).

Weller, Seppi and Gardner (ACL 2022), with the protocol of docs/PROTOCOL.md:
- `single`:  fine-tune on the target alone (the baselines, and the supports of STILTs).
- `stilts`:  fine-tune on the support; pick one support model over its seeds (by default the one
             with the highest support dev score, as the authors did by hand); fine-tune that model on
             the target with a fresh optimizer and schedule, carrying the support's trained head over
             where the protocol allows it.
- `mtl`:     target and support(s) together, one encoder; under `tl` an epoch is one pass over the
             target, under `authors` each unordered set of tasks is trained once and read for each.
- `mtl_all`: all nine GLUE tasks (or those named) in one model; every task's score is its own best
             checkpoint, and one run record is written per task so that statistics treat MTL-ALL like
             any other method.

`plan(cfg, settings, train_size)` lists the `Job`s of a configuration: every run to train, in order,
each with the run ids it `needs` complete first and the run ids whose records it writes (`outputs`).
`run(cfg, settings)` trains the plan; the grid (tl/study) reads the same jobs. Two rules live only
here: the single runs a run builds on (STILTs' supports, dynamic sampling's references) are the
single runs of each task at the size this run gives it, over `--support-seeds` (default: the paper's
five, printed before training); and the sampler "auto" resolves per protocol (`resolve_sampler`).

The results folder is tl/runs.py's: run ids, records, atomic writes. A run whose records are
complete is skipped; a partial one resumes, on the same data files only (their sha256 are in its
record); a different run under the same id is refused before any training, and so is a second process
on a run being trained (`tl.runs.hold_run`).
Imports tl.data, tl.heads, tl.hub, tl.metrics, tl.model, tl.runs, tl.tasks, tl.tokenizer, tl.train.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import tl
from tl.train import arg
from tl.data import data_identity, load_tokenized, subsample
from tl.heads import HeadSpec, MultiTaskModel, label_count_key
from tl.hub import resolve_model
from tl.metrics import BOUNDS, majority_score
from tl.model import Encoder, EncoderConfig
from tl.runs import (SCHEMA, builds_on_singles, check_data, check_existing, check_writable, drop_checkpoints,
                     hold_run, read_record, resolve_dir, run_id, write_json)
from tl.tasks import GLUE_TASKS, get_task
from tl.tokenizer import Tokenizer
from tl.train import TaskData, TrainSettings, fit, seed_everything

MODES = ("single", "stilts", "mtl", "mtl_all")
SELECTIONS = ("max", "median", "mean-closest")
PAPER_SEEDS = (42, 544460, 801760, 428404, 257803)
# The order in which the authors' pair script visits tasks (orionw/MTLvsIFT bin/glue/execute_glue:
# pairs i < j of this array, `--task_names "arr[i] arr[j]"`). Under `authors` a set of tasks is
# trained once, in this order: their quotas give a rounding shortfall to the first task, so the
# order is part of the run; other tasks follow in name order.
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
    support_seeds: tuple[int, ...] = arg(PAPER_SEEDS, "seeds of the single runs a run builds on, trained first "
                                         "when missing and listed before training: STILTs' supports (the best "
                                         "is continued from) and dynamic sampling's references (their mean); "
                                         "independent of --seeds")
    reference_scores: str = arg("", "dynamic sampling: JSON {task: single-task dev score x100}; default: the "
                                "mean of the single runs of each task over --support-seeds (trained first)")
    device: str = arg("", "cpu, cuda, cuda:1, ...; default: cuda when available")

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        names = [get_task(t).name for t in self.tasks]  # unknown names fail here, with the known ones
        if len(set(names)) != len(names):
            raise ValueError(f"--tasks lists a task twice ({', '.join(names)}): the target cannot be its own support")
        if self.mode == "single" and len(names) != 1:
            raise ValueError(f"--mode single trains one task; got --tasks {','.join(names) or '(none)'}")
        if self.mode in ("stilts", "mtl") and len(names) < 2:
            raise ValueError(f"--mode {self.mode} needs a target and a support: --tasks TARGET,SUPPORT (got {','.join(names) or 'none'})")
        if self.mode == "stilts" and len(names) != 2:
            raise ValueError(f"--mode stilts takes exactly one support: --tasks TARGET,SUPPORT (got {','.join(names)})")
        if self.support_selection not in SELECTIONS:
            raise ValueError(f"--support-selection must be one of {', '.join(SELECTIONS)}")
        seeds = lambda xs: bool(xs) and all(0 <= s < 2**32 for s in xs)
        rules = {"seeds": (seeds(self.seeds), "a list of integers in [0, 2^32)"),  # flag: (valid, what it must be)
                 "support_seeds": (seeds(self.support_seeds), "a list of integers in [0, 2^32)"),
                 # [CLS] a [SEP] b [SEP] (RoBERTa: <s> a </s></s> b </s>) and text on both sides
                 "max_len": (self.max_len >= 8, "at least 8"), "results_dir": (bool(self.results_dir), "a folder"),
                 "limit_train": (self.limit_train >= 0, ">= 0 (0: all)"),
                 "target_size": (self.target_size >= 0, ">= 0 (0: all)")}
        for name, (ok, rule) in rules.items():
            if not ok:
                raise ValueError(f"--{name.replace('_', '-')} must be {rule}, got {getattr(self, name)!r}")
        parse_support_size(self.support_size)

    @property
    def task_names(self) -> list[str]:
        names = [get_task(t).name for t in self.tasks]
        return names or ([t.name for t in GLUE_TASKS] if self.mode == "mtl_all" else names)


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
    """The sampler a run uses, resolved before its id is made. "auto": tl -> `dynamic`; authors ->
    `uniform` for pairs (bin/glue/execute_glue) and `size` for MTL-ALL (Table 1 reads the size-sampled
    run). Under authors "dynamic" is their softmax variant, `dynamic-softmax`. A one-task run never
    asks its sampler: it gets a fixed value, left out of its identity (tl.runs.identity)."""
    if mode in ("single", "stilts"):
        return "size"
    if sampler == "auto":
        return "dynamic" if protocol == "tl" else ("size" if mode == "mtl_all" else "uniform")
    return "dynamic-softmax" if protocol == "authors" and sampler == "dynamic" else sampler


def train_sizes(cfg: RunConfig, train_size: Callable[[str], int], target: str, supports: list[str]) -> dict[str, int]:
    """Training examples actually used per task, after --limit-train, --target-size, --support-size;
    `train_size(task)` is the task's full training-set size."""
    def full(task):
        n = train_size(task)
        return min(n, cfg.limit_train) if cfg.limit_train else n

    sizes = {target: min(full(target), cfg.target_size) if cfg.target_size else full(target)}
    kind, value = parse_support_size(cfg.support_size)
    for s in supports:
        n = full(s)
        if kind == "n":
            n = min(n, int(value))
        elif kind == "x":
            n = min(n, max(1, round(value * sizes[target])))
        sizes[s] = n
    return sizes


# ---------------------------------------------------------------------------------------------
# jobs: what to train, in which order, and what each one writes


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


def _read_for_each(cfg: RunConfig, settings: TrainSettings) -> bool:
    """Under authors an mtl set is trained once, in AUTHORS_ORDER, and read for each of its tasks
    (bin/glue/execute_glue trains each pair once), unless --target-size or --support-size make the
    target special (then the asked order, one record)."""
    return settings.protocol == "authors" and cfg.mode == "mtl" and not (cfg.target_size or cfg.support_size)


def _id(cfg: RunConfig, settings: TrainSettings, mode: str, tasks: list[str], seed: int) -> str:
    return run_id(mode, tasks, seed, sampler=settings.sampler, schedule=settings.schedule,
                  protocol=settings.protocol, limit_train=cfg.limit_train, target_size=cfg.target_size,
                  support_size=cfg.support_size)


def _make_job(cfg: RunConfig, settings: TrainSettings, mode: str, tasks: list[str], seed: int, **cfg_changes) -> Job:
    cfg = replace(cfg, mode=mode, tasks=tuple(tasks), seeds=(seed,), **cfg_changes)
    settings = replace(settings, sampler=resolve_sampler(mode, settings.sampler, settings.protocol))
    rid = _id(cfg, settings, mode, tasks, seed)
    if mode == "mtl_all":  # the joint run, then one record per task, scored at its own best checkpoint
        outputs = (rid, *(_id(cfg, settings, mode, [t], seed) for t in tasks))
    elif _read_for_each(cfg, settings):
        outputs = tuple(_id(cfg, settings, mode, [t, *(x for x in tasks if x != t)], seed) for t in tasks)
    else:
        outputs = (rid,)
    return Job(rid, mode, tasks[0], tuple(tasks[1:]), seed, cfg, settings, (), outputs)


def single_jobs(cfg: RunConfig, settings: TrainSettings, train_size: Callable[[str], int], task: str,
                size: int) -> list[Job]:
    """The single runs a run builds on for `task` trained on `size` examples: one per --support-seeds.
    A size below the task's (limited) full size becomes their --target-size."""
    unsized = train_sizes(replace(cfg, target_size=0, support_size=""), train_size, task, [])[task]
    base = replace(cfg, support_size="", target_size=size if size < unsized else 0)
    return [_make_job(base, settings, "single", [task], s) for s in cfg.support_seeds]


def plan(cfg: RunConfig, settings: TrainSettings, train_size: Callable[[str], int]) -> list[Job]:
    """The jobs of every seed of `cfg`, each after the jobs it needs (STILTs' support runs, dynamic
    sampling's reference runs); a job shared by several is listed once. `train_size(task)`: the
    full training-set size of a task."""
    names = cfg.task_names
    if _read_for_each(cfg, settings):  # trained once, in AUTHORS_ORDER
        known = [t for t in AUTHORS_ORDER if t in names]
        names = known + sorted(t for t in names if t not in known)
    jobs: dict[str, Job] = {}
    for seed in cfg.seeds:
        job = _make_job(cfg, settings, cfg.mode, names, seed)
        sizes = train_sizes(job.cfg, train_size, job.target, list(job.supports))
        built_on = []
        if builds_on_singles(job.mode, job.settings.sampler, job.cfg.reference_scores):
            built_on = list(job.supports) if job.mode == "stilts" else list(sizes)
        deps = [d for t in built_on for d in single_jobs(job.cfg, settings, train_size, t, sizes[t])]
        for d in deps:
            jobs.setdefault(d.run_id, d)
        jobs.setdefault(job.run_id, replace(job, needs=tuple(d.run_id for d in deps)))
    return list(jobs.values())


# ---------------------------------------------------------------------------------------------
# data and model


def environment(device: torch.device) -> dict:
    """Code version and environment, so every run can be reproduced from its directory."""
    try:
        git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        git = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    return {"tl": tl.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "device": name, "git": git}


class Context:
    """What every job of one plan shares: device, model folder, tokenizer (lowercasing under the
    authors' protocol, their --do_lower_case), data cache, results folder."""

    def __init__(self, cfg: RunConfig, protocol: str = "tl"):
        self.cfg, self.protocol = cfg, protocol
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model_dir = resolve_model(cfg.model)
        self.tokenizer = Tokenizer.from_checkpoint(self.model_dir, lowercase=protocol == "authors")
        self.cache_dir = Path(cfg.cache_dir or os.environ.get("TL_CACHE", Path.home() / ".cache" / "tl")) / "tokens"
        self.results = Path(cfg.results_dir)
        self._splits: dict = {}

    def split(self, task: str, name: str):
        key = (task, name)
        if key not in self._splits:
            self._splits[key] = load_tokenized(get_task(task), name, self.tokenizer, self.cfg.max_len,
                                               self.cfg.data_dir, self.cache_dir)
        return self._splits[key]

    def train_size(self, task: str) -> int:
        return len(self.split(task, "train"))

    def task_data(self, task: str, train_size: int, seed_for_subsample: int = 0) -> TaskData:
        """A task's tokenized train split (subsampled to `train_size` when smaller) and dev split(s).
        The subsample's seed is fixed (not the run's seed): every method and seed sees the same
        examples, as the size experiments require."""
        spec = get_task(task)
        train = self.split(task, "train")
        if 0 < train_size < len(train):
            train = train.subset(subsample(len(train), train_size, seed_for_subsample))
        dev = {s: self.split(task, s) for s in spec.files if s not in ("train", "test")}
        return TaskData(spec=spec, train=train, dev=dev)

    def new_model(self, tasks: list[str], init_from: Path | None = None) -> MultiTaskModel:
        """Heads per task under tl, per label count under the authors' protocol."""
        encoder = Encoder.from_pretrained(init_from or self.model_dir)
        share = "label_count" if self.protocol == "authors" else "task"
        return MultiTaskModel(encoder, [head_spec(t) for t in tasks], share=share)


def head_spec(task: str) -> HeadSpec:
    spec = get_task(task)
    return HeadSpec(spec.name, 1 if spec.is_regression else spec.num_labels, spec.is_regression)


# ---------------------------------------------------------------------------------------------
# references and supports: read from the records of a job's needs


def read_reference_scores(path, tasks: list[str]) -> dict[str, float]:
    """`--reference-scores FILE`, JSON {task: single-task dev score x100}, for `tasks`; ValueError naming
    the file for a task without a score or a score that is not a number in its headline metric's range."""
    try:
        given = {get_task(k).name: v for k, v in json.loads(Path(path).read_text()).items()}
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"--reference-scores {path}: expected a JSON object {{task: score x100}} ({e})") from None
    missing = [t for t in tasks if t not in given]
    if missing:
        raise ValueError(f"--reference-scores {path} has no score for {', '.join(missing)}")
    for t in tasks:
        low, high = (100 * b for b in BOUNDS[get_task(t).headline])
        if type(given[t]) not in (int, float) or not low <= given[t] <= high:  # NaN fails the comparison
            raise ValueError(f"--reference-scores {path}: {t}'s score {json.dumps(given[t])} is not a number in "
                             f"[{low:g}, {high:g}] ({get_task(t).headline} x100)")
    return {t: float(given[t]) for t in tasks}


def check_inputs(cfg: RunConfig) -> None:
    """The flags that need a file read, checked before any run folder is made (tools/train.py and the
    grid): the reference scores, and --max-len against the model's positions (RoBERTa's start at pad + 1)."""
    if cfg.reference_scores:
        read_reference_scores(cfg.reference_scores, cfg.task_names)
    model = EncoderConfig.from_checkpoint(resolve_model(cfg.model))
    positions = model.max_position_embeddings - (model.pad_token_id + 1 if model.model_type == "roberta" else 0)
    if cfg.max_len > positions:
        raise ValueError(f"--max-len {cfg.max_len} exceeds the {positions} positions of --model {cfg.model}")


def reference_scores(cfg: RunConfig, results: Path, job: Job) -> dict[str, float]:
    """Single-task reference scores for dynamic sampling: `--reference-scores FILE`, else the mean
    score of the job's needs (the single runs of each task at this run's size, over --support-seeds)."""
    tasks = [job.target, *job.supports]
    if cfg.reference_scores:
        return read_reference_scores(cfg.reference_scores, tasks)
    records = _needed_records(results, job, "dynamic sampling's reference scores")
    return {t: float(np.mean([r["score"] for r in records if r["target"] == t])) for t in tasks}


def _needed_records(results: Path, job: Job, why: str) -> list[dict]:
    records = [read_record(results / rid) for rid in job.needs]
    missing = [rid for rid, r in zip(job.needs, records) if r is None or r.get("status") != "complete"]
    if missing:
        raise ValueError(f"{job.run_id}: {why} need the complete single runs {', '.join(missing)}; "
                         f"train them first (tools/train.py runs them itself)")
    return records


def select_support(records: list[dict], how: str) -> dict:
    """The support run to continue from: `max` (highest support dev score, the paper's choice),
    `median` (the run at the median score; the lower middle for an even count), `mean-closest`."""
    scores = np.array([r["score"] for r in records])
    if how == "max":
        i = int(np.argmax(scores))
    elif how == "median":
        i = int(np.argsort(scores, kind="stable")[(len(scores) - 1) // 2])
    elif how == "mean-closest":
        i = int(np.argmin(np.abs(scores - scores.mean())))
    else:
        raise ValueError(f"unknown support selection {how!r}; choose one of {', '.join(SELECTIONS)}")
    return records[i]


def carries_head(target: str, support: str, protocol: str) -> bool:
    """STILTs starts the target's head from the support's trained one: under tl when the two tasks
    have the same label strings, under the authors' protocol when they have the same label count
    (their shared `classifier` / `mclassifier` / `regression` heads)."""
    if protocol == "authors":
        return label_count_key(head_spec(target)) == label_count_key(head_spec(support))
    return get_task(target).labels == get_task(support).labels


# ---------------------------------------------------------------------------------------------
# training a job


def job_config(job: Job) -> dict:
    """Every resolved setting of a job, as its records store them."""
    return {**asdict(job.cfg), **asdict(replace(job.settings, seed=job.seed)), "seed": job.seed}


def start_model(ctx: Context, job: Job, trained: list[str]) -> tuple[MultiTaskModel, dict]:
    """The model a job starts from (STILTs: the chosen support model, its head carried over where
    `carries_head` says so) and the record fields that say where it came from."""
    init_from, extra, carry = None, {}, False
    if job.mode == "stilts":
        runs = _needed_records(ctx.results, job, "STILTs' support models")
        chosen = select_support(runs, job.cfg.support_selection)
        init_from = resolve_dir(ctx.results / chosen["run_id"] / "best")
        if init_from is None:
            raise FileNotFoundError(f"{ctx.results / chosen['run_id']}: no best/ model to continue from; "
                                    f"delete that run folder and run again")
        carry = carries_head(job.target, job.supports[0], ctx.protocol)
        extra = {"support_run": chosen["run_id"], "support_selection": job.cfg.support_selection,
                 "support_score": chosen["score"], "support_runs": [r["run_id"] for r in runs],
                 "head": "reused" if carry else "new"}
        print(f"{job.run_id}: picked {chosen['run_id']}, dev {chosen['score']:.1f} (--support-selection "
              f"{job.cfg.support_selection} of {len(runs)}), head {extra['head']}", flush=True)
    seed_everything(job.seed)  # the new heads' initialisation is part of the run's seed
    model = ctx.new_model(trained, init_from)
    if carry:  # authors: both heads sit under the label-count key; tl: under the task names
        own = model.head_key(0)
        model.load_heads(init_from, mapping={own: own if ctx.protocol == "authors" else job.supports[0]})
    return model, extra


def _fit_job(ctx: Context, job: Job, config: dict) -> dict:
    """Train the job's model under its run id; returns its complete record."""
    run_dir = ctx.results / job.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    sizes = train_sizes(job.cfg, ctx.train_size, job.target, list(job.supports))
    trained = [job.target] if job.mode == "stilts" else list(sizes)  # stilts: the support is in its start
    tasks = [ctx.task_data(t, sizes[t]) for t in trained]
    data = data_identity([t.spec for t in tasks], job.cfg.data_dir)  # the files' sha256: part of the run's identity
    check_data(run_dir, data, job.cfg.data_dir)
    multi = job.mode in ("mtl", "mtl_all")
    if multi and job.settings.sampler.startswith("dynamic"):
        refs = reference_scores(job.cfg, ctx.results, job)
        for t in tasks:
            t.reference = refs[t.spec.name]
    model, extra = start_model(ctx, job, trained)
    record = {"schema": SCHEMA, "run_id": job.run_id, "status": "running", "mode": job.mode, "target": job.target,
              "supports": list(job.supports), "sampler": job.settings.sampler if multi else None,
              "schedule": job.settings.schedule if multi else None, "seed": job.seed, "model": job.cfg.model,
              "protocol": job.settings.protocol, "train_sizes": {t.spec.name: len(t.train) for t in tasks},
              "majority": {t.spec.name: majority_score(t.spec, t.dev["dev"].labels) for t in tasks},  # dev baseline
              **extra, "config": config, "data": data, "env": environment(ctx.device)}
    write_json(run_dir / "config.json", {**config, "data": data})
    settings = replace(job.settings, seed=job.seed, keep_best=() if job.mode == "mtl_all" else (job.target,))
    # tl's pairwise MTL: an epoch is one pass over the target; MTL-ALL and the authors' rule: None
    anchor = job.target if job.mode == "mtl" and job.settings.protocol == "tl" else None
    summary = fit(model, tasks, settings, run_dir, device=ctx.device, pad_id=ctx.tokenizer.pad_id,
                  tokenizer=ctx.tokenizer, record=record, anchor=anchor)
    record.update(status="complete", best=summary["best"], score=summary["best"][job.target]["score"],
                  steps=summary["steps"], examples_seen=summary["examples_seen"], passes=summary["passes"],
                  timing=summary["timing"])
    write_json(run_dir / "record.json", record)
    if not job.settings.keep_checkpoint:  # 780 paper runs of DistilRoBERTa would keep ~780 GB of it
        drop_checkpoints(run_dir)
    print(f"{job.run_id}: score {record['score']:.2f}  " + "  ".join(
        f"{t} {summary['best'][t]['score']:.2f}" for t in summary["best"]), flush=True)
    return record


def _per_task_records(ctx: Context, job: Job, joint: dict) -> list[dict]:
    """The records of a run read for several targets (mtl_all; the authors' mtl sets), each scored at
    its target's own best checkpoint; `train_run` names the folder that trained them."""
    tasks = [job.target, *job.supports]
    per_task = job.outputs[1:] if job.mode == "mtl_all" else job.outputs
    shared = {k: v for k, v in joint.items() if k not in ("role", "per_task")}
    records = []
    for task, rid in zip(tasks, per_task):
        if rid == job.run_id:
            records.append(joint)
            continue
        others = [t for t in tasks if t != task]
        record = {**shared, "run_id": rid, "target": task, "supports": others, "score": joint["best"][task]["score"],
                  "train_run": job.run_id, "config": {**joint["config"], "tasks": [task, *others]}}
        (ctx.results / rid).mkdir(parents=True, exist_ok=True)
        write_json(ctx.results / rid / "record.json", record)
        records.append(record)
    if job.mode == "mtl_all":  # the joint record would count its first task twice in the statistics
        write_json(ctx.results / job.run_id / "record.json",
                   {**joint, "status": "complete", "role": "train", "per_task": list(per_task)})
    return records


def train_job(ctx: Context, job: Job) -> list[dict]:
    """Train `job` unless its records are complete; returns the records it is read by: the run's
    own, or one per task (mtl_all; an authors mtl set)."""
    if job.settings.protocol != ctx.protocol:
        raise ValueError(f"{job.run_id}: protocol {job.settings.protocol!r} in a {ctx.protocol!r} context")
    config = job_config(job)
    done = [check_existing(ctx.results / rid, config) for rid in job.outputs]
    if all(r is not None for r in done):
        print(f"{job.run_id}: complete, score {done[0]['score']:.2f} (skipped)", flush=True)
        return done[1:] if job.mode == "mtl_all" else done
    with hold_run(ctx.results, job.run_id):  # one writer per run: a second process is refused, naming the first
        done = [check_existing(ctx.results / rid, config) for rid in job.outputs]  # finished while we looked?
        joint = done[0] or _fit_job(ctx, job, config)
        return _per_task_records(ctx, job, joint) if len(job.outputs) > 1 else [joint]


def _announce(jobs: list[Job], cfg: RunConfig, results: Path) -> None:
    """Say which single runs the asked ones build on (issue 16: never train them silently)."""
    asked = [j for j in jobs if j.mode == cfg.mode]
    deps = [j for j in jobs if j.mode != cfg.mode]
    if not deps:
        return
    todo = [j.run_id for j in deps if not all((r := read_record(results / o)) and r.get("status") == "complete"
                                              for o in j.outputs)]
    stilts = cfg.mode == "stilts"
    kind, why = ("support", "STILTs' supports") if stilts else ("reference", "dynamic sampling's references")
    seeds, of = ",".join(map(str, cfg.support_seeds)), ", ".join(dict.fromkeys(j.target for j in deps))
    print(f"{asked[0].run_id}{' and others' if len(asked) > 1 else ''} build on {len(deps)} single runs "
          f"({why}; --support-seeds {seeds}, whatever --seeds): {len(deps) - len(todo)} complete"
          + (f"; training {len(todo)} {kind} runs of {of} first (seeds {seeds}): {', '.join(todo)}" if todo else ""),
          flush=True)


def run(cfg: RunConfig, settings: TrainSettings) -> list[dict]:
    """Every seed of the configured method, after the runs it needs (`plan`); returns the complete
    records of the asked runs (per task for mtl_all and authors mtl sets, the asked target first)."""
    check_writable(Path(cfg.results_dir))  # before the model is fetched, not after hours of training
    ctx = Context(cfg, settings.protocol)
    jobs = plan(cfg, settings, ctx.train_size)
    for job in jobs:  # a clash with an earlier run's settings fails before any training
        for rid in job.outputs:
            check_existing(ctx.results / rid, job_config(job))
    _announce(jobs, cfg, ctx.results)
    records = []
    for job in jobs:
        out = train_job(ctx, job)
        if job.mode == cfg.mode:
            records.extend(out)
    if cfg.mode == "mtl":  # an authors set is trained in its canonical order; the asked target first
        records.sort(key=lambda r: (cfg.seeds.index(r["seed"]), r["target"] != cfg.task_names[0]))
    return records
