"""Training a plan's jobs (tl/recipes.py) into the results folder (tl/runs.py): the model each job starts from
(STILTs: the chosen support's best/), dynamic sampling's reference scores, the run record. `run` trains a
configuration's plan (tools/train.py), `train_job` one job (the grid's workers, tl/study/run.py).
Imports tl.data, tl.heads, tl.hub, tl.metrics, tl.model, tl.recipes, tl.runs, tl.tasks, tl.tokenizer, tl.train.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import subprocess
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

import tl
from tl.data import data_identity, load_tokenized, subsample
from tl.heads import MultiTaskModel
from tl.hub import resolve_model
from tl.metrics import BOUNDS, majority_score
from tl.model import Encoder
from tl.recipes import Job, RunConfig, carries_head, head_spec, plan, select_support, train_sizes
from tl.runs import (SCHEMA, check_data, check_existing, check_writable, drop_checkpoints, read_record, resolve_dir,
                     write_json)
from tl.tasks import get_task
from tl.tokenizer import Tokenizer
from tl.train import TaskData, TrainSettings, fit, seed_everything


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
    """What the jobs of one plan share: device, model folder, tokenizer, token cache, results folder."""

    def __init__(self, cfg: RunConfig, protocol: str = "tl"):
        self.cfg, self.protocol = cfg, protocol
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model_dir = resolve_model(cfg.model)
        self.tokenizer = Tokenizer.from_checkpoint(self.model_dir, lowercase=protocol == "authors")  # --do_lower_case
        self.cache_dir = Path(cfg.cache_dir or os.environ.get("TL_CACHE", Path.home() / ".cache" / "tl")) / "tokens"
        self.results = Path(cfg.results_dir)
        self.split = functools.cache(lambda task, name: load_tokenized(  # a task's tokenized split, once
            get_task(task), name, self.tokenizer, cfg.max_len, cfg.data_dir, self.cache_dir))

    def train_size(self, task: str) -> int:
        return len(self.split(task, "train"))

    def task_data(self, task: str, train_size: int, seed_for_subsample: int = 0) -> TaskData:
        """A task's train split, subsampled to `train_size` with a fixed seed (every method and seed sees the
        same examples), and its dev split(s)."""
        spec, train = get_task(task), self.split(task, "train")
        if 0 < train_size < len(train):
            train = train.subset(subsample(len(train), train_size, seed_for_subsample))
        return TaskData(spec, train, {s: self.split(task, s) for s in spec.files if s not in ("train", "test")})


def read_reference_scores(path, tasks: list[str]) -> dict[str, float]:
    """`--reference-scores FILE` ({task: dev score x100}) for `tasks`, each in its headline metric's range."""
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


def _needed_records(results: Path, job: Job, why: str) -> list[dict]:
    records = [read_record(results / rid) for rid in job.needs]
    missing = [rid for rid, r in zip(job.needs, records) if r is None or r.get("status") != "complete"]
    if missing:
        raise ValueError(f"{job.run_id}: {why} need the complete single runs {', '.join(missing)}; "
                         f"train them first (tools/train.py runs them itself)")
    return records


def reference_scores(results: Path, job: Job) -> dict[str, float]:
    """Dynamic sampling's reference scores without --reference-scores: the mean score of the job's needs."""
    tasks = [job.target, *job.supports]
    records = _needed_records(results, job, "dynamic sampling's reference scores")
    return {t: float(np.mean([r["score"] for r in records if r["target"] == t])) for t in tasks}


def job_config(job: Job) -> dict:
    """The run's resolved settings (config.json); a --reference-scores file's scores, not its path, are part of it."""
    config = {**asdict(job.cfg), **asdict(replace(job.settings, seed=job.seed)), "seed": job.seed}
    if job.cfg.reference_scores and job.settings.sampler.startswith("dynamic"):
        config["reference_values"] = read_reference_scores(job.cfg.reference_scores, [job.target, *job.supports])
    return config


def start_model(ctx: Context, job: Job, trained: list[str]) -> tuple[MultiTaskModel, dict]:
    """The model a job starts from (STILTs: the chosen support's best/) and the record fields saying so."""
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
    model = MultiTaskModel(Encoder.from_pretrained(init_from or ctx.model_dir), [head_spec(t) for t in trained],
                           share="label_count" if ctx.protocol == "authors" else "task")
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
    data = data_identity([t.spec for t in tasks], job.cfg.data_dir)
    check_data(run_dir, data, job.cfg.data_dir)
    multi = job.mode in ("mtl", "mtl_all")
    refs = {}
    if multi and job.settings.sampler.startswith("dynamic"):  # --reference-scores: read into config by job_config
        refs = config.get("reference_values") or reference_scores(ctx.results, job)
    for t in tasks:
        t.reference = refs.get(t.spec.name)
    model, extra = start_model(ctx, job, trained)
    record = {"schema": SCHEMA, "run_id": job.run_id, "status": "running", "mode": job.mode, "target": job.target,
              "supports": list(job.supports), "sampler": job.settings.sampler if multi else None,
              "schedule": job.settings.schedule if multi else None, "seed": job.seed, "model": job.cfg.model,
              "protocol": job.settings.protocol, "train_sizes": {t.spec.name: len(t.train) for t in tasks},
              "majority": {t.spec.name: majority_score(t.spec, t.dev["dev"].labels) for t in tasks},
              **extra, "config": config, "data": data, "env": environment(ctx.device)}
    write_json(run_dir / "config.json", {**config, "data": data})
    settings = replace(job.settings, seed=job.seed, keep_best=() if job.mode == "mtl_all" else (job.target,))
    # tl's pairwise MTL: an epoch is one pass over the target; MTL-ALL and the authors' rule: None
    anchor = job.target if job.mode == "mtl" and job.settings.protocol == "tl" else None
    summary = fit(model, tasks, settings, run_dir, device=ctx.device, pad_id=ctx.tokenizer.pad_id,
                  tokenizer=ctx.tokenizer, record=record, anchor=anchor)
    record.update(status="complete", best=summary["best"], score=summary["best"][job.target]["score"],
                  **{k: summary[k] for k in ("steps", "examples_seen", "passes", "timing")})
    write_json(run_dir / "record.json", record)
    if not job.settings.keep_checkpoint:  # 780 paper runs of DistilRoBERTa would keep ~780 GB of it
        drop_checkpoints(run_dir)
    print(f"{job.run_id}: score {record['score']:.2f}  " + "  ".join(
        f"{t} {summary['best'][t]['score']:.2f}" for t in summary["best"]), flush=True)
    return record


def train_job(ctx: Context, job: Job) -> list[dict]:
    """Train `job` unless complete; its records: its own, or one per task (mtl_all, an authors mtl set)."""
    if job.settings.protocol != ctx.protocol:
        raise ValueError(f"{job.run_id}: protocol {job.settings.protocol!r} in a {ctx.protocol!r} context")
    config = job_config(job)
    done = [check_existing(ctx.results / rid, config) for rid in job.outputs]
    per_task = list(job.outputs[1:] if job.mode == "mtl_all" else job.outputs)
    if all(done):
        print(f"{job.run_id}: complete, score {done[0]['score']:.2f} (skipped)", flush=True)
        return done[1:] if job.mode == "mtl_all" else done
    joint = check_existing(ctx.results / job.run_id, config) or _fit_job(ctx, job, config)
    if len(job.outputs) == 1:
        return [joint]
    tasks = [job.target, *job.supports]
    shared = {k: v for k, v in joint.items() if k not in ("role", "per_task")}
    records = []
    for task, rid in zip(tasks, per_task):
        if rid == job.run_id:  # an authors set's first record is its run's own
            records.append(joint)
            continue
        others = [t for t in tasks if t != task]
        records.append({**shared, "run_id": rid, "target": task, "supports": others, "train_run": job.run_id,
                        "score": joint["best"][task]["score"],
                        "config": {**joint["config"], "tasks": [task, *others]}})
        (ctx.results / rid).mkdir(parents=True, exist_ok=True)
        write_json(ctx.results / rid / "record.json", records[-1])
    if job.mode == "mtl_all":  # the joint record would count its first task twice in the statistics
        write_json(ctx.results / job.run_id / "record.json",
                   {**joint, "status": "complete", "role": "train", "per_task": per_task})
    return records


def run(cfg: RunConfig, settings: TrainSettings, hold=None) -> list[dict]:
    """Train the plan of `cfg`; the records of the asked runs (per task for mtl_all and authors mtl sets).
    `hold(results, run_id)`: a context each job to train runs in (tools/train.py: tl.study.locks.hold_run)."""
    check_writable(Path(cfg.results_dir))  # before the model is fetched, not after hours of training
    ctx = Context(cfg, settings.protocol)
    jobs = plan(cfg, settings, ctx.train_size)
    # a clash with an earlier run's settings fails before any training
    done = {j.run_id: all([check_existing(ctx.results / rid, job_config(j)) for rid in j.outputs]) for j in jobs}
    deps = [j.run_id for j in jobs if j.mode != cfg.mode]
    todo = [rid for rid in deps if not done[rid]]
    if deps:  # never train them silently
        why = "STILTs' supports" if cfg.mode == "stilts" else "dynamic sampling's references"
        print(f"{cfg.mode} runs build on {len(deps)} single runs ({why}; --support-seeds "
              f"{','.join(map(str, cfg.support_seeds))}, whatever --seeds): {len(deps) - len(todo)} complete"
              + (f"; training {', '.join(todo)} first" if todo else ""), flush=True)
    records = []
    for job in jobs:
        with hold(ctx.results, job.run_id) if hold and not done[job.run_id] else contextlib.nullcontext():
            records += [r for r in train_job(ctx, job) if job.mode == cfg.mode]
    if cfg.mode == "mtl":  # an authors set is trained in its canonical order; the asked target first
        records.sort(key=lambda r: (cfg.seeds.index(r["seed"]), r["target"] != cfg.task_names[0]))
    return records
