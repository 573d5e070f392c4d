"""The paper's transfer methods as recipes over `fit()`: single, stilts, mtl, mtl_all.

Weller, Seppi and Gardner (ACL 2022), with the protocol of `shared/paper/PROTOCOL.md`:
- `single`:  fine-tune on the target alone (the baselines, and the supports of STILTs).
- `stilts`:  fine-tune on the support; pick one support model over its seeds (by default the one
             with the highest support dev score, as the authors did by hand); fine-tune that model on
             the target with a fresh optimizer and schedule, re-initialising the head where the two
             tasks' label spaces differ.
- `mtl`:     target and support(s) together, one encoder, a head per task (default: dynamic
             sampling, heterogeneous batches).
- `mtl_all`: all nine GLUE tasks (or those named) in one model; every task's score is its own best
             checkpoint, and one run record is written per task so that statistics treat MTL-ALL like
             any other method.

Every run lives in `<results>/<run_id>/` with `record.json` (the contract of ARCHITECTURE.md). A run
whose record is complete is skipped; a partial one resumes; a different run under the same id (other
settings) is refused before any training.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

import tl
from tl.cli import arg
from tl.data import load_tokenized, subsample
from tl.heads import HeadSpec, MultiTaskModel
from tl.hub import resolve_model
from tl.model import Encoder
from tl.tasks import GLUE_TASKS, get_task
from tl.tokenizer import Tokenizer
from tl.train import TaskData, TrainSettings, dist_info, fit, resolve_dir, seed_everything, write_json

MODES = ("single", "stilts", "mtl", "mtl_all")
SELECTIONS = ("max", "median", "mean-closest")
PAPER_SEEDS = (42, 544460, 801760, 428404, 257803)
SCHEMA = 1


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
    support_seeds: tuple[int, ...] = arg(PAPER_SEEDS, "stilts: seeds of the support runs to choose from")
    reference_scores: str = arg("", "dynamic sampling: JSON {task: single-task dev score x100}; default: "
                                "the mean of complete single runs in the results folder")
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
        if not self.seeds:
            raise ValueError("--seeds is empty")
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
    except ValueError:
        pass
    raise ValueError(f"--support-size must be a count (5000) or a multiple of the target size (2x, 0.5x, 1/3x), got {text!r}")


# ---------------------------------------------------------------------------------------------
# run ids and records


def run_id(mode: str, target: str, supports: list[str], seed: int, cfg: RunConfig, settings: TrainSettings) -> str:
    """Deterministic from the run's identity, e.g. `mtl__rte+mnli__dynamic__s42`. Settings that are
    not in the id are checked against the record's config when a run is found under it."""
    parts = [mode, "+".join([target] + supports).lower().replace("-", "")]
    if mode in ("mtl", "mtl_all"):
        parts.append(settings.sampler)
        if settings.schedule != "heterogeneous":
            parts.append(settings.schedule)
    if cfg.limit_train:
        parts.append(f"lim{cfg.limit_train}")
    if cfg.target_size:
        parts.append(f"tgt{cfg.target_size}")
    if cfg.support_size and mode != "single":
        parts.append("sup" + cfg.support_size.replace("/", "_"))
    parts.append(f"s{seed}")
    return "__".join(parts)


# settings that change how a run is executed, not what it computes
_NOT_IDENTITY = {"results_dir", "cache_dir", "seeds", "device", "progress", "support_seeds", "data_dir",
                 "reference_scores", "eval_batch_size", "save_every", "tasks", "mode", "keep_best", "compile",
                 "keep_checkpoint"}


def identity(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in _NOT_IDENTITY}


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


def read_record(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "record.json"
    return json.loads(path.read_text()) if path.exists() else None


def check_existing(run_dir: Path, config: dict) -> dict | None:
    """The complete record under `run_dir`, None to (re)start; a clash of settings is an error."""
    record = read_record(run_dir)
    if record is None:
        return None
    # compare as JSON sees them (tuples become lists)
    old, new = identity(record.get("config", {})), identity(json.loads(json.dumps(config, default=list)))
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in diff[:4])
        raise ValueError(f"{run_dir} holds a run with other settings ({shown}); use another --results-dir "
                         f"or delete that folder")
    return record if record.get("status") == "complete" else None


def complete_records(results_dir: Path) -> list[dict]:
    out = []
    for path in sorted(Path(results_dir).glob("*/record.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if record.get("status") == "complete":
            out.append(record)
    return out


# ---------------------------------------------------------------------------------------------
# data and model


class Context:
    """What every run of one invocation shares: device, tokenizer, model folder, data cache."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model_dir = resolve_model(cfg.model)
        self.tokenizer = Tokenizer.from_checkpoint(self.model_dir)
        self.cache_dir = Path(cfg.cache_dir or os.environ.get("TL_CACHE", Path.home() / ".cache" / "tl")) / "tokens"
        self.results = Path(cfg.results_dir)
        self._splits: dict = {}

    def split(self, task: str, name: str):
        key = (task, name)
        if key not in self._splits:
            self._splits[key] = load_tokenized(get_task(task), name, self.tokenizer, self.cfg.max_len,
                                               self.cfg.data_dir, self.cache_dir)
        return self._splits[key]

    def task_data(self, task: str, train_size: int, seed_for_subsample: int = 0) -> TaskData:
        """A task's tokenized train split (subsampled to `train_size` when > 0) and dev split(s).
        The subsample's seed is fixed (not the run's seed): every method and seed sees the same
        examples, as the size experiments require."""
        spec = get_task(task)
        train = self.split(task, "train")
        if 0 < train_size < len(train):
            train = train.subset(subsample(len(train), train_size, seed_for_subsample))
        dev = {s: self.split(task, s) for s in spec.files if s not in ("train", "test")}
        return TaskData(spec=spec, train=train, dev=dev)

    def new_model(self, tasks: list[str], init_from: Path | None = None) -> MultiTaskModel:
        heads = [HeadSpec(get_task(t).name, 1 if get_task(t).is_regression else get_task(t).num_labels,
                          get_task(t).is_regression) for t in tasks]
        encoder = Encoder.from_pretrained(init_from or self.model_dir)
        return MultiTaskModel(encoder, heads)


def train_sizes(cfg: RunConfig, ctx: Context, target: str, supports: list[str]) -> dict[str, int]:
    """Training examples actually used per task, after --limit-train, --target-size, --support-size."""
    def full(task):
        n = len(ctx.split(task, "train"))
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
# the recipes


def run_config_dict(cfg: RunConfig, settings: TrainSettings, seed: int) -> dict:
    return {**asdict(cfg), **asdict(replace(settings, seed=seed)), "seed": seed}


def _train(ctx: Context, settings: TrainSettings, mode: str, target: str, supports: list[str], seed: int,
           *, init_from: Path | None = None, extra: dict | None = None, keep_best=True) -> dict:
    """One run of fit() under its run id, with its record; returns the complete record."""
    cfg = ctx.cfg
    rid = run_id(mode, target, supports, seed, cfg, settings)
    run_dir = ctx.results / rid
    config = run_config_dict(cfg, settings, seed)
    config.update(mode=mode, tasks=[target] + supports)
    done = check_existing(run_dir, config)
    if done is not None:
        print(f"{rid}: complete, score {done['score']:.2f} (skipped)", flush=True)
        return done
    run_dir.mkdir(parents=True, exist_ok=True)
    sizes = train_sizes(cfg, ctx, target, supports)
    trained = [target] if mode == "stilts" else [target] + supports  # stilts: the support is in init_from
    tasks = [ctx.task_data(t, sizes[t] if sizes[t] < len(ctx.split(t, "train")) else 0) for t in trained]
    if mode in ("mtl", "mtl_all") and settings.sampler.startswith("dynamic"):
        refs = reference_scores(ctx, [t.spec.name for t in tasks], sizes)
        for t in tasks:
            t.reference = refs[t.spec.name]
    seed_everything(seed)  # the new heads' initialisation is part of the run's seed
    model = ctx.new_model([t.spec.name for t in tasks], init_from)
    if extra and extra.get("heads_from"):
        src, same = extra.pop("heads_from")
        if same:
            model.load_heads(src, mapping={target: same})
    record = {"schema": SCHEMA, "run_id": rid, "status": "running", "mode": mode, "target": target,
              "supports": supports, "sampler": settings.sampler if mode in ("mtl", "mtl_all") else None,
              "schedule": settings.schedule if mode in ("mtl", "mtl_all") else None, "seed": seed,
              "model": cfg.model, "train_sizes": {t.spec.name: len(t.train) for t in tasks},
              **(extra or {}), "config": config, "env": environment(ctx.device)}
    write_json(run_dir / "config.json", config)
    run_settings = replace(settings, seed=seed, keep_best=(target,) if keep_best else ())
    summary = fit(model, tasks, run_settings, run_dir, device=ctx.device, pad_id=ctx.tokenizer.pad_id,
                  tokenizer=ctx.tokenizer, record=record)
    record.update(status="complete", best=summary["best"], score=summary["best"][target]["score"],
                  steps=summary["steps"], timing=summary["timing"])
    write_json(run_dir / "record.json", record)
    if not settings.keep_checkpoint and dist_info()[0] == 0:
        # the resume state is 3x the model (AdamW's two moments): 780 paper runs of DistilRoBERTa
        # would keep ~780 GB of it; best/ and the record are what later steps read
        for folder in run_dir.glob("checkpoint*"):
            shutil.rmtree(folder, ignore_errors=True)
    print(f"{rid}: score {record['score']:.2f}  " + "  ".join(
        f"{t} {summary['best'][t]['score']:.2f}" for t in summary["best"]), flush=True)
    return record


def run_single(ctx: Context, settings: TrainSettings, task: str, seed: int) -> dict:
    return _train(ctx, settings, "single", task, [], seed)


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


def support_config(cfg: RunConfig, ctx: Context, target: str, support: str) -> RunConfig:
    """The config of the single runs a STILTs run continues from: plain single runs of the support,
    subsampled like this run's support (a --support-size becomes their --target-size; --limit-train
    alone is theirs already). `ctx` only answers len(ctx.split(task, "train")); tl/grid.py plans with it."""
    n = train_sizes(cfg, ctx, target, [support])[support]
    unsized = train_sizes(replace(cfg, support_size=""), ctx, target, [support])[support]
    return replace(cfg, support_size="", target_size=n if n < unsized else 0)


def run_stilts(ctx: Context, settings: TrainSettings, target: str, support: str, seed: int) -> dict:
    cfg = ctx.cfg
    support_ctx = _with_cfg(ctx, support_config(cfg, ctx, target, support))
    support_runs = [run_single(support_ctx, settings, support, s) for s in cfg.support_seeds]
    chosen = select_support(support_runs, cfg.support_selection)
    best_dir = resolve_dir(ctx.results / chosen["run_id"] / "best")
    if best_dir is None:
        raise FileNotFoundError(f"{ctx.results / chosen['run_id']}: no best/ model to continue from; "
                                f"delete that run folder and run again")
    same_labels = get_task(target).labels == get_task(support).labels
    extra = {"support_run": chosen["run_id"], "support_selection": cfg.support_selection,
             "support_score": chosen["score"], "support_runs": [r["run_id"] for r in support_runs],
             "head": "reused" if same_labels else "new", "heads_from": (best_dir, support if same_labels else None)}
    return _train(ctx, settings, "stilts", target, [support], seed, init_from=best_dir, extra=extra)


def run_mtl(ctx: Context, settings: TrainSettings, target: str, supports: list[str], seed: int) -> dict:
    return _train(ctx, settings, "mtl", target, supports, seed)


def run_mtl_all(ctx: Context, settings: TrainSettings, tasks: list[str], seed: int) -> list[dict]:
    """One model over all `tasks`; then one record per task, `mtl_all__<task>__<sampler>__s<seed>`,
    each scored at that task's own best checkpoint (PROTOCOL.md)."""
    joint = _train(ctx, settings, "mtl_all", tasks[0], tasks[1:], seed, keep_best=False)
    records = []
    for task in tasks:
        rid = run_id("mtl_all", task, [], seed, ctx.cfg, settings)
        record = {**joint, "run_id": rid, "target": task, "supports": [t for t in tasks if t != task],
                  "score": joint["best"][task]["score"], "train_run": joint["run_id"]}
        (ctx.results / rid).mkdir(parents=True, exist_ok=True)
        write_json(ctx.results / rid / "record.json", record)
        records.append(record)
    # the joint run's own record would count its first task twice in the statistics
    joint_record = ctx.results / joint["run_id"] / "record.json"
    write_json(joint_record, {**joint, "status": "complete", "role": "train", "per_task": [r["run_id"] for r in records]})
    return records


def _with_cfg(ctx: Context, cfg: RunConfig) -> Context:
    other = object.__new__(Context)
    other.__dict__.update(ctx.__dict__)
    other.cfg = cfg
    return other


def reference_scores(ctx: Context, tasks: list[str], sizes: dict[str, int] | None = None) -> dict[str, float]:
    """Single-task reference scores for dynamic sampling: `--reference-scores FILE`, else the mean
    score of the complete single runs of each task in the results folder with the same model, max_len
    and training-set size as this run gives that task (`sizes`, default: train_sizes of the config)."""
    cfg = ctx.cfg
    if cfg.reference_scores:
        path = Path(cfg.reference_scores)
        try:
            given = {get_task(k).name: float(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError) as e:
            raise ValueError(f"--reference-scores {path}: expected a JSON object {{task: score x100}} ({e})")
        missing = [t for t in tasks if t not in given]
        if missing:
            raise ValueError(f"--reference-scores {path} has no score for {', '.join(missing)}")
        return {t: given[t] for t in tasks}
    sizes = sizes or train_sizes(cfg, ctx, tasks[0], tasks[1:])
    found = {}
    for r in complete_records(ctx.results):
        c, t = r.get("config", {}), r.get("target")
        if r.get("mode") == "single" and t in sizes and (r.get("train_sizes") or {}).get(t) == sizes[t] \
                and c.get("model") == cfg.model and c.get("max_len") == cfg.max_len:
            found.setdefault(t, []).append(r["score"])
    missing = [t for t in tasks if t not in found]
    if missing:
        def command(t):
            full = len(ctx.split(t, "train"))
            limit = f" --limit-train {cfg.limit_train}" if cfg.limit_train and cfg.limit_train < full else ""
            size = f" --target-size {sizes[t]}" if sizes[t] < min(full, cfg.limit_train or full) else ""
            return (f"python tools/train.py --mode single --tasks {t.lower()} --model {cfg.model} "
                    f"--results-dir {cfg.results_dir}{limit}{size}")
        commands = "; ".join(command(t) for t in missing)
        raise ValueError(f"--sampler dynamic needs single-task reference scores for {', '.join(missing)}: run {commands} "
                         f"(or pass --reference-scores FILE, or choose --sampler size)")
    return {t: float(np.mean(found[t])) for t in tasks}


def check_writable(results: Path) -> None:
    """Fail at once, not after hours of training, when the results folder cannot be written."""
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe = results / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"--results-dir {results} is not writable ({e.strerror}); choose another folder")


def run(cfg: RunConfig, settings: TrainSettings) -> list[dict]:
    """Every seed of the configured method; returns the complete records."""
    ctx = Context(cfg)
    names = cfg.task_names
    check_writable(ctx.results)
    mode = cfg.mode
    for seed in cfg.seeds:  # a clash with an earlier run's settings fails before any training
        config = run_config_dict(cfg, settings, seed)
        config.update(mode=mode, tasks=names if mode != "mtl_all" else [names[0]] + names[1:])
        check_existing(ctx.results / run_id(mode, names[0], names[1:], seed, cfg, settings), config)
    if cfg.mode in ("mtl", "mtl_all") and settings.sampler.startswith("dynamic"):
        reference_scores(ctx, names)  # fail before any training when they are missing
    records = []
    for seed in cfg.seeds:
        if cfg.mode == "single":
            records.append(run_single(ctx, settings, names[0], seed))
        elif cfg.mode == "stilts":
            records.append(run_stilts(ctx, settings, names[0], names[1], seed))
        elif cfg.mode == "mtl":
            records.append(run_mtl(ctx, settings, names[0], names[1:], seed))
        else:
            records.extend(run_mtl_all(ctx, settings, names, seed))
    return records
