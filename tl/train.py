"""The training loop: `fit()` fine-tunes a MultiTaskModel on one or more tasks, `evaluate()` scores it.

It follows the paper's protocol (docs/PROTOCOL.md). Setup is small named steps, as torchtune's recipes; the
loop reads top to bottom, as nanoGPT's train.py. A step's loss weights come from the whole global batch, so
accumulation and DDP give the same gradient (STYLE.md 9); a killed run resumes exactly from checkpoint/.

Imports tl.data, tl.heads, tl.metrics, tl.model, tl.runs, tl.sampling.
"""
from __future__ import annotations

import json
import math
import pickle
import random
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from tqdm.auto import tqdm

from tl.data import collate
from tl.heads import MultiTaskModel
from tl.metrics import compute_metrics, headline_score
from tl.model import Encoder
from tl.runs import append_log, fresh_dir, read_json, resolve_dir, swap_dir, write_json, write_log, writing
from tl.sampling import PROTOCOLS, SAMPLERS, SCHEDULES, MultiTaskSampler, shard, task_weights

CHECKPOINT_FORMAT = 2  # 2: loop state in state.json, optim.pt loadable with weights_only, no scheduler
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# settings that may change between a run and its resumption (they do not change what is computed)
RESUME_FREE = {"progress", "save_every", "keep_checkpoint", "keep_best", "eval_batch_size", "compile"}


def arg(default, help: str, **choices):
    """A dataclass field with its flag's help text (tools/flags.py turns it into `--a-flag`)."""
    return field(default=default, metadata={"help": help, **choices})


@dataclass
class TrainSettings:
    """Optimisation settings of one run; the defaults are the paper's (PROTOCOL.md)."""

    epochs: float = arg(10.0, "training epochs; an epoch is the sampler's (tl: one pass over the target of a "
                        "pairwise run, else over all tasks; authors: their code's epochs)")
    max_steps: int = arg(0, "stop after this many optimizer steps, the schedule following; 0: no cap")
    batch_size: int = arg(128, "examples per optimizer step, over all processes")
    micro_batch: int = arg(0, "accumulate micro-batches of this size per process; 0: the whole batch at once")
    lr: float = arg(2e-5, "peak learning rate of AdamW")
    weight_decay: float = arg(0.0, "AdamW weight decay (biases and LayerNorm excluded)")
    warmup_ratio: float = arg(0.0, "fraction of the schedule spent warming the learning rate up")
    max_grad_norm: float = arg(1.0, "clip the gradient norm to this; inf: no clipping")
    precision: str = arg("auto", "fp32, bf16 or fp16 (with a gradient scaler); auto: bf16 on GPUs with native "
                         "bf16 (A100, H100), else fp16 there, fp32 on CPU", choices=PRECISIONS)
    protocol: str = arg("tl", "tl (fair epochs, every example weighs the same, schedule over the actual steps) "
                        "or authors (their code's epochs, per-task mean losses, schedule from the first epoch)")
    evals_per_epoch: int = arg(2, "dev evaluations per epoch (the paper: every half epoch)")
    eval_batch_size: int = arg(256, "examples per evaluation batch")
    early_stopping: int = arg(0, "stop after this many evaluations without a better target score; 0: off")
    seed: int = 42
    sampler: str = arg("auto", "uniform, size, temperature, dynamic or dynamic-softmax; auto: the recipe's choice")
    schedule: str = arg("heterogeneous", "multi-task batches: heterogeneous, homogeneous, partitioned")
    temperature: float = arg(2.0, "T of the temperature sampler (weights ~ size^(1/T))")
    length_pool: int = arg(0, "batches pooled for length sorting; 0: the whole epoch for one task (tl), else 1")
    save_every: int = arg(0, "also write a resume checkpoint every N steps; 0: at each evaluation only")
    max_nonfinite: int = arg(5, "skipped steps in a row that fail the run (non-finite loss; fp16: at loss scale 1)")
    keep_best: tuple = ()  # tasks whose best model is written to best/ (best/<TASK>/ when several)
    keep_checkpoint: bool = arg(False, "keep checkpoint/ (to resume from) once the run is complete, not only best/")
    progress: bool = arg(True, "show progress bars")
    compile: bool = arg(False, "torch.compile the encoder's layers (dynamic shapes; the first steps are slow)")

    def __post_init__(self):
        inf = math.inf  # NaN fails every comparison, so it fails here too
        rules = {"batch_size": (self.batch_size > 0, "positive"), "max_steps": (self.max_steps >= 0, ">= 0"),
                 "epochs": (0 <= self.epochs < inf, "finite and >= 0"), "lr": (0 < self.lr <= 1, "in (0, 1]"),
                 "weight_decay": (0 <= self.weight_decay < inf, "finite and >= 0"),
                 "warmup_ratio": (0 <= self.warmup_ratio < 1, "in [0, 1)"),
                 "max_grad_norm": (self.max_grad_norm > 0, "> 0 (inf: no clipping)"),
                 "evals_per_epoch": (self.evals_per_epoch > 0, "positive"),
                 "eval_batch_size": (self.eval_batch_size > 0, "positive"),
                 "early_stopping": (self.early_stopping >= 0, ">= 0 (0: off)"),
                 "temperature": (0 < self.temperature < inf, "finite and > 0"),
                 "length_pool": (self.length_pool >= 0, ">= 0"), "save_every": (self.save_every >= 0, ">= 0"),
                 "max_nonfinite": (self.max_nonfinite > 0, "positive")}  # flag: (valid, what it must be)
        for name, (ok, rule) in rules.items():
            if not ok:
                raise ValueError(f"--{name.replace('_', '-')} must be {rule}, got {getattr(self, name)}")
        if self.micro_batch < 0 or (self.micro_batch and self.batch_size % self.micro_batch):
            raise ValueError(f"--micro-batch {self.micro_batch} must divide --batch-size {self.batch_size} "
                             f"(for example --micro-batch {math.gcd(self.batch_size, max(self.micro_batch, 1))})")
        choices = {"precision": PRECISIONS, "protocol": PROTOCOLS, "sampler": ("auto", *SAMPLERS),
                   "schedule": SCHEDULES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ValueError("set --epochs > 0 or --max-steps > 0")


@dataclass
class TaskData:
    """One task of a run: its spec, head, tokenized train split and dev split(s)."""

    spec: object  # tl.tasks.TaskSpec
    train: object  # tl.data.TokenizedSplit
    dev: dict = field(default_factory=dict)  # split name ("dev", "dev_mismatched") -> TokenizedSplit
    reference: float | None = None  # single-task dev score (x100), for dynamic sampling


@dataclass
class LoopState:
    """Where a run stands; saved in checkpoint/state.json, so a resumed run continues exactly."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # the current epoch (from 0)
    position: int = 0  # steps done in it
    best: dict = field(default_factory=dict)  # task -> best dev metrics, with their step and epoch
    history: list = field(default_factory=list)  # one entry per evaluation (log.jsonl's lines)
    stale: int = 0  # evaluations since the target's score last improved
    examples_seen: dict = field(default_factory=dict)  # task -> training rows of the global batches so far
    sampler_state: dict | None = None  # the sampler at the start of `epoch` (None before the first)
    t_total: float | None = None  # authors: the schedule's length, fixed at the first epoch
    nonfinite: int = 0  # consecutive non-finite losses
    timing: dict = field(default_factory=lambda: {"train_seconds": 0.0, "examples": 0, "tokens": 0})


def to_device(batch: dict, device: torch.device) -> dict:
    # pinned memory + non_blocking overlaps the copy with compute on CUDA
    if device.type == "cuda":
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return {k: v.to(device) for k, v in batch.items()}


def pad_multiple(device: torch.device) -> int:
    """Batches are padded to a multiple of 8 on CUDA (tensor cores; compiled attention's mask alignment)."""
    return 8 if device.type == "cuda" else 1


def clock(device: torch.device) -> float:
    """time.perf_counter() once `device` has done its queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def loss_weights(task_ids: np.ndarray, n_tasks: int, protocol: str) -> np.ndarray:
    """(n_tasks,) the loss weight of a row of each task in the global batch `task_ids` (B,): tl 1/B;
    authors 1/B_task, the sum of the tasks' mean losses (run_glue.py `train`)."""
    if protocol == "authors":
        return 1.0 / np.maximum(np.bincount(task_ids, minlength=n_tasks), 1)
    return np.full(n_tasks, 1.0 / len(task_ids))


@torch.no_grad()
def evaluate(model: MultiTaskModel, tasks: list[TaskData], device, amp_dtype, batch_size: int, pad_id: int) -> dict:
    """{task: metrics} of its dev splits (a second split's prefixed: `dev_mismatched_accuracy`), `score` x100.
    Each rank predicts every world-th example in length order; the ranks' predictions are summed."""
    model.eval()
    rank, world = dist_info()
    results = {}
    for t, task in enumerate(tasks):
        metrics = {}
        for split_name, split in task.dev.items():
            order = np.argsort(split.lengths, kind="stable")[rank::world]
            preds = np.zeros(len(split.lengths), dtype=np.float64)
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = collate([split], np.zeros(len(idx), dtype=np.int64), idx, pad_id, pad_multiple(device))
                batch = to_device(batch, device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype != torch.float32):
                    hidden = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
                    logits = model.heads[model.head_key(t)](model.features(hidden)).float()
                preds[idx] = (logits.squeeze(-1) if model.specs[t].regression else logits.argmax(-1)).cpu().numpy()
            if world > 1:
                total = torch.from_numpy(preds).to(device)
                dist.all_reduce(total)  # each example is non-zero on one rank only: the sum is exact
                preds = total.cpu().numpy()
            preds = preds if task.spec.is_regression else preds.astype(np.int64)
            prefix = "" if split_name == "dev" else split_name + "_"
            metrics.update({prefix + k: float(v) for k, v in compute_metrics(task.spec, preds, split.labels).items()})
        metrics["score"] = float(headline_score(task.spec, metrics))
        results[task.spec.name] = metrics
    model.train()
    return results


def save_model(model: MultiTaskModel, final: Path, state: dict, tokenizer=None, optim: dict | None = None,
               classifier: tuple | None = None) -> None:
    """Folder `final`: the encoder (or `classifier`: `MultiTaskModel.hf_classifier`'s config and tensors),
    heads, tokenizer, `optim.pt` and `state.json`."""
    with writing(final):  # disk full, read-only: one line naming the folder
        tmp = fresh_dir(final.with_name(final.name + ".tmp"))
        model.encoder.save_pretrained(tmp)
        if classifier is not None:  # tl's own loader reads the encoder out of it (Encoder.from_pretrained)
            write_json(tmp / "config.json", classifier[0])
            save_file(classifier[1], str(tmp / "model.safetensors"), metadata={"format": "pt"})
        model.save_heads(tmp)
        if tokenizer is not None:
            tokenizer.save(tmp)
        if optim is not None:
            torch.save(optim, tmp / "optim.pt")
        write_json(tmp / "state.json", state)
        swap_dir(tmp, final)


def _rng_state() -> dict:
    """The RNG states as tensors and plain values (what `torch.load(weights_only=True)` reads back)."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss],
             "python": list(random.getstate())}
    if torch.cuda.is_initialized():  # a run that used CUDA (asking a CPU run's would start CUDA on every GPU)
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    saved = state.get("cuda", []) if torch.cuda.is_available() else []
    if len(saved) > torch.cuda.device_count():  # resumed on a host that sees fewer GPUs
        warnings.warn(f"the checkpoint holds the CUDA RNG states of {len(saved)} GPUs, {torch.cuda.device_count()} "
                      f"visible here: restored those; dropout draws will differ from the uninterrupted run")
    for i, cuda in enumerate(saved[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(cuda, i)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(run_dir: Path, model, optimizer, scaler, state: LoopState, settings: TrainSettings) -> None:
    """checkpoint/ (docs/DESIGN.md, Contracts); a collective under DDP (the RNG states are gathered)."""
    rank, world = dist_info()
    rngs = [_rng_state()]
    if world > 1:
        rngs = [None] * world
        dist.all_gather_object(rngs, _rng_state())
    if rank == 0:
        save_model(model, run_dir / "checkpoint",
                   {"format_version": CHECKPOINT_FORMAT, **asdict(state), "settings": asdict(settings),
                    "precision": run_precision(model, settings)},
                   optim={"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng_ranks": rngs})


def save_best(run_dir: Path, model, tokenizer, task: str, state: LoopState, settings: TrainSettings,
              labels=None) -> None:
    """best/ (best/<task>/ when several): the model at `task`'s best dev score; one task's as transformers'
    `*ForSequenceClassification` (`labels`: its id2label)."""
    if dist_info()[0] == 0:
        final = run_dir / "best" if len(settings.keep_best) <= 1 else run_dir / "best" / task
        best = state.best[task]
        save_model(model, final, {"task": task, "step": best["step"], "epoch": best["epoch"], "metrics": best},
                   tokenizer, classifier=model.hf_classifier(0, labels) if len(model.specs) == 1 else None)


def resume(run_dir: Path, model, optimizer, scaler, settings: TrainSettings) -> LoopState | None:
    """The loop state of `run_dir`'s checkpoint/, loaded into the model, optimizer, scaler and RNG; None without."""
    run_dir.mkdir(parents=True, exist_ok=True)
    found = resolve_dir(run_dir / "checkpoint")
    if found is None:
        write_log(run_dir / "log.jsonl", [])  # lines of an attempt killed before its first checkpoint
        return None
    saved = read_json(found / "state.json", f"delete {found} to start the run again from step 0")
    if saved.get("format_version") != CHECKPOINT_FORMAT:
        raise ValueError(f"{found}: checkpoint format {saved.get('format_version')}, this tl reads "
                         f"{CHECKPOINT_FORMAT}; delete {run_dir} to start again")
    now = json.loads(json.dumps(asdict(settings), default=list))
    diff = sorted(k for k in now if k not in RESUME_FREE and saved["settings"].get(k) != now[k])
    if diff:
        shown = ", ".join(f"{k} {saved['settings'].get(k)!r} vs {now[k]!r}" for k in diff[:4])
        raise ValueError(f"{found}: checkpoint from other settings ({shown}); delete {run_dir} to start again")
    precision, before = run_precision(model, settings), saved.get("precision")  # None: written before tl recorded it
    if before not in (None, precision):  # "auto" resolves by device: a CPU run resumed on a GPU would switch
        where = "--device cpu" if before == "fp32" else f"a GPU {'with' if before == 'bf16' else 'without'} native bf16"
        raise ValueError(f"{found}: checkpoint trained in {before}, --precision {settings.precision} gives {precision} "
                         f"here; resume it where it ran ({where}) or delete {run_dir} to start again")
    try:  # tensors and plain values only: a file that would run code is refused, unread
        extra = torch.load(found / "optim.pt", weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        why = "refused, not tensors and plain values" if isinstance(e, pickle.UnpicklingError) else "truncated or damaged"
        raise ValueError(f"{found / 'optim.pt'}: {why} ({first}); delete {found} to start the run again "
                         f"from step 0") from None
    model.encoder.load_state_dict(Encoder.from_pretrained(found).state_dict())
    model.load_heads(found)
    optimizer.load_state_dict(extra["optimizer"])
    if extra["scaler"]:  # empty: saved without a gradient scaler (not fp16); an fp16 run then starts a fresh one
        scaler.load_state_dict(extra["scaler"])
    rank, world = dist_info()
    rngs = extra["rng_ranks"]
    if len(rngs) != world and world > 1:
        warnings.warn(f"{found}: checkpoint of {len(rngs)} process(es) resumed on {world}; dropout draws will differ")
    _set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
    state = LoopState(**{f.name: saved[f.name] for f in fields(LoopState)})
    write_log(run_dir / "log.jsonl", state.history)  # drops lines after the checkpoint, and a torn one
    if rank == 0:
        print(f"resuming {run_dir.name} from step {state.step} (epoch {state.epoch}, step {state.position} in it)",
              flush=True)
    return state


def make_optimizer(model: torch.nn.Module, settings: TrainSettings, device) -> torch.optim.Optimizer:
    """AdamW; with weight decay, biases and LayerNorm weights are excluded (as BERT's recipe)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": settings.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    # fused: one kernel launch on CUDA; on CPU no temporaries for the word embeddings (MiniLM SST-2 464 -> 329 ms)
    return torch.optim.AdamW(groups, lr=settings.lr, fused=device.type in ("cuda", "cpu"))


def linear_factor(done: float, warmup: float = 0.0) -> float:
    """The multiplier at fraction `done` of the schedule: transformers' get_linear_schedule_with_warmup."""
    if done < warmup:
        return done / warmup
    return max(0.0, (1.0 - done) / (1.0 - warmup))


def epoch_plan(epochs: float, epoch: int, n: int) -> tuple[int, bool]:
    """(steps the run takes of epoch `epoch` of `n` batches, whether it is the last); `--epochs 2.5`: half the third."""
    left = epochs - epoch
    if epochs <= 0 or left > 1:
        return n, False
    return max(1, math.ceil(round(left * n, 6))), True  # round: 0.3 * 10 is 3.0000000000000004


def learning_rate(settings: TrainSettings, state: LoopState, n: int) -> float:
    """The next step's learning rate (nanoGPT's get_lr); tl: by the fraction of the epochs done (docs/PROTOCOL.md)."""
    if settings.protocol == "authors":
        return settings.lr * linear_factor(state.step / state.t_total, settings.warmup_ratio)
    parts = []
    if settings.epochs > 0:
        planned, _ = epoch_plan(settings.epochs, state.epoch, n)
        share = min(1.0, settings.epochs - state.epoch)
        parts.append((state.epoch + share * state.position / planned) / settings.epochs)
    if settings.max_steps > 0:
        parts.append(state.step / settings.max_steps)
    return settings.lr * linear_factor(max(parts), settings.warmup_ratio)


def run_precision(model: torch.nn.Module, settings: TrainSettings) -> str:
    """fp32, bf16 or fp16: `settings.precision` resolved on `model`'s device (saved in checkpoints)."""
    dtype = resolve_precision(settings.precision, next(model.parameters()).device)
    return next(name for name, d in DTYPES.items() if d == dtype)


def resolve_precision(precision: str, device) -> torch.dtype:
    """The autocast dtype; auto: bf16 on GPUs of compute capability 8.0 on, else fp16 there, fp32 on CPU.
    Not is_bf16_supported(): it asks the current device and counts emulated bf16."""
    device = torch.device(device)
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
        return torch.float32
    return DTYPES[precision]


def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def allreduce_grads(model: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """Sum gradients and loss over ranks in one buffer; a gradient no rank has stays None (AdamW skips it)."""
    params = [p for p in model.parameters() if p.requires_grad]
    used = torch.tensor([float(p.grad is not None) for p in params], device=loss.device)  # (P,)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [used, loss.reshape(1).float()])
    dist.all_reduce(flat)
    *summed, users, total = flat.split([p.numel() for p in params] + [len(params), 1])
    for p, g, part, n_used in zip(params, grads, summed, users.tolist()):
        p.grad = g.copy_(part.view_as(g)) if n_used else None
    return total[0].clone()  # not a view: the flat buffer (a copy of every gradient) is freed here


def setup_sampler(tasks: list[TaskData], settings: TrainSettings, anchor: str | None) -> MultiTaskSampler:
    """The sampler of the run's epochs (tl/sampling.py)."""
    if settings.batch_size % dist_info()[1]:
        raise ValueError(f"--batch-size {settings.batch_size} must be divisible by the {dist_info()[1]} processes")
    if settings.sampler == "auto" and len(tasks) > 1:
        raise ValueError("--sampler auto is resolved by the recipe (tl/recipes.py) for a protocol and mode; "
                         "fit needs a sampler for several tasks")
    sizes = {t.spec.name: len(t.train) for t in tasks}
    # one task under tl: the whole epoch sorted by length; several: each batch's task mixture stays exact
    pool = settings.length_pool or (math.ceil(sum(sizes.values()) / settings.batch_size)
                                    if len(tasks) == 1 and settings.protocol == "tl" else 1)
    return MultiTaskSampler(sizes, lengths={t.spec.name: np.asarray(t.train.lengths) for t in tasks},
                            batch_size=settings.batch_size, schedule=settings.schedule, seed=settings.seed,
                            length_pool=pool, protocol=settings.protocol, anchor=anchor)


def setup_model(model: MultiTaskModel, settings: TrainSettings, device: torch.device) -> None:
    """Seed, move to `device`, make every rank start equal, compile the layers if asked."""
    rank, world = dist_info()
    seed_everything(settings.seed + rank)  # rank 0 is a single process's run; other ranks draw other dropout
    model.to(device).train()
    if world > 1:
        for p in model.parameters():  # identical start on every rank
            dist.broadcast(p.data, 0)
    if settings.compile:
        # the layers' 8 graphs (README) reach dynamo's default limit, past which it runs eager without a word
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
        for layer in model.encoder.encoder["layer"]:
            layer.compile(dynamic=True)  # in place: parameter names (and checkpoints) stay as they are


def start_epoch(sampler: MultiTaskSampler, state: LoopState, tasks: list[TaskData], settings: TrainSettings) -> list:
    """The batches of epoch `state.epoch`, from the sampler's state at its start (a resumed run regenerates
    them); a new epoch of several tasks first gets weights from the last dev scores (dynamic sampling)."""
    if state.sampler_state is not None:
        sampler.load_state_dict(state.sampler_state)
    if state.position == 0 and len(tasks) > 1:
        names = [t.spec.name for t in tasks]
        current = {n: state.history[-1]["dev"][n]["score"] for n in names} if state.history else None
        reference = {t.spec.name: t.reference for t in tasks if t.reference is not None}
        weights = task_weights(settings.sampler, {t.spec.name: len(t.train) for t in tasks},
                               temperature=settings.temperature, reference=reference or None, current=current)
        sampler.set_weights(weights, uniform=settings.sampler == "uniform")
    state.sampler_state = sampler.state_dict()
    batches = sampler.epoch_batches(state.epoch)
    if settings.protocol == "authors" and state.t_total is None:
        # run_glue.py `train`: t_total = len(train_dataloader) // accumulation * epochs, from the first epoch only
        state.t_total = len(batches) * settings.epochs if settings.epochs > 0 else math.inf
        if settings.max_steps > 0:
            state.t_total = min(state.t_total, settings.max_steps)
    return batches


def train_step(model, optimizer, scaler, splits: list, rows: tuple, weights: np.ndarray, state: LoopState,
               settings: TrainSettings, device, amp_dtype, pad_id: int) -> float:
    """One optimizer step on this rank's `rows` (task_ids, example_ids), row losses weighted by `weights[task]`;
    returns the step's loss. A skipped step (non-finite loss or fp16 gradient) leaves `state.nonfinite` > 0."""
    task_ids, example_ids = rows
    micro = settings.micro_batch or settings.batch_size
    loss_sum = torch.zeros((), device=device)
    for start in range(0, len(task_ids), micro):
        part = slice(start, start + micro)
        batch = collate(splits, task_ids[part], example_ids[part], pad_id, pad_multiple(device))
        state.timing["examples"] += len(batch["labels"])
        state.timing["tokens"] += int(batch["attention_mask"].sum())
        batch = to_device(batch, device)
        row_weights = torch.as_tensor(weights[task_ids[part]], dtype=torch.float32, device=device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype != torch.float32):
            loss = (row_weights * model.losses(batch)).sum()
        scaler.scale(loss).backward()
        loss_sum += loss.detach()
    if dist_info()[1] > 1:
        loss_sum = allreduce_grads(model, loss_sum)
    loss = float(loss_sum)
    scale = scaler.get_scale()  # 1.0 without a scaler
    if math.isfinite(loss) or scaler.is_enabled():
        scaler.unscale_(optimizer)  # these four are plain clip and optimizer.step() when the scaler is disabled
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        scaler.step(optimizer)  # fp16: skipped when a gradient is not finite, and the scale halves
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if math.isfinite(loss) and scaler.get_scale() >= scale:
        state.nonfinite = 0
        return loss
    # skipped: fit tries the batch again. fp16 overflows are routine until the scale is down to 1
    state.nonfinite += 1
    if not scaler.is_enabled():
        warnings.warn(f"step {state.step + 1}: non-finite loss {loss}; skipped, the batch again "
                      f"({state.nonfinite} in a row)")
    if state.nonfinite >= settings.max_nonfinite and scale <= 1:
        what = f"gradients (fp16, down to loss scale {scale:g})" if scaler.is_enabled() else "losses"
        raise FloatingPointError(f"{state.nonfinite} steps in a row skipped for non-finite {what} at step "
                                 f"{state.step + 1}: lower --lr, or use --precision fp32")
    return loss


def advance(state: LoopState, task_ids: np.ndarray, names: list[str], n: int, settings: TrainSettings) -> tuple:
    """Count a step of the epoch of `n` batches; returns (epochs done, whether to evaluate, whether the run is over)."""
    state.step += 1
    state.position += 1
    for name, rows in zip(names, np.bincount(task_ids, minlength=len(names)).tolist()):
        state.examples_seen[name] = state.examples_seen.get(name, 0) + rows
    k, planned_last = settings.evals_per_epoch, epoch_plan(settings.epochs, state.epoch, n)
    at_eval = state.position in {(j * n + k - 1) // k for j in range(1, k + 1)}  # ceil(j n / k)
    over = (planned_last[1] and state.position >= planned_last[0]) or 0 < settings.max_steps <= state.step
    return state.epoch + state.position / n, at_eval, over


def record_evaluation(state: LoopState, entry: dict, names: list[str], finite: bool) -> list[str]:
    """Add an evaluation to the history; returns the tasks whose best score it improved (only if `finite`)."""
    state.history.append(entry)
    improved = []
    for name in names:
        score = entry["dev"][name]["score"]
        if finite and math.isfinite(score) and (name not in state.best or score > state.best[name]["score"]):
            state.best[name] = {**entry["dev"][name], "step": entry["step"], "epoch": entry["epoch"]}
            improved.append(name)
    state.stale = 0 if names[0] in improved else state.stale + 1
    return improved


def summarize(state: LoopState, tasks: list[TaskData], first: tuple | None, steps_now: int) -> dict:
    """fit's result; the steady-state timing leaves out this call's first step (one-time costs)."""
    world, timing = dist_info()[1], state.timing
    seconds = max(timing["train_seconds"], 1e-9)
    first = first if first is not None and steps_now > 1 else (0.0, 0, 0)
    sizes = {t.spec.name: len(t.train) for t in tasks}
    return {"best": state.best, "history": state.history, "steps": state.step,
            "examples_seen": dict(state.examples_seen),
            "passes": {name: state.examples_seen.get(name, 0) / sizes[name] for name in sizes},
            "timing": {"train_seconds": round(timing["train_seconds"], 3),
                       "examples_per_second": timing["examples"] * world / seconds,
                       "tokens_per_second": timing["tokens"] * world / seconds,
                       "steady_seconds": round(max(timing["train_seconds"] - first[0], 1e-9), 3),
                       "steady_examples": (timing["examples"] - first[1]) * world,
                       "steady_tokens": (timing["tokens"] - first[2]) * world}}


def fit(model: MultiTaskModel, tasks: list[TaskData], settings: TrainSettings, run_dir: Path, *,
        device: torch.device | str = "cpu", pad_id: int = 0, tokenizer=None, record: dict | None = None,
        anchor: str | None = None) -> dict:
    """Train `model` on `tasks` (tasks[0] the target) into `run_dir`; `anchor`: the task one pass over which is
    an epoch (tl). `record`: the run record, written as "running" at each evaluation."""
    device, run_dir = torch.device(device), Path(run_dir)
    rank, world = dist_info()
    amp_dtype = resolve_precision(settings.precision, device)
    names, splits = [t.spec.name for t in tasks], [t.train for t in tasks]
    sampler = setup_sampler(tasks, settings, anchor)
    setup_model(model, settings, device)
    optimizer = make_optimizer(model, settings, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)  # one path for every precision
    state = resume(run_dir, model, optimizer, scaler, settings) or LoopState(examples_seen={n: 0 for n in names})
    bar = tqdm(initial=state.step, desc=run_dir.name, disable=None if settings.progress and rank == 0 else True,
               dynamic_ncols=True)  # None: no bar off a terminal
    batches, first, start = None, None, (state.step, state.timing["examples"], state.timing["tokens"])
    t0 = clock(device)
    try:
        while True:
            if batches is None:
                batches = start_epoch(sampler, state, tasks, settings)
                bar.total = state.step + math.ceil(max(0.0, settings.epochs - state.epoch) * len(batches)) - state.position
            n = len(batches)
            lr = learning_rate(settings, state, n)
            for group in optimizer.param_groups:
                group["lr"] = lr
            task_ids, example_ids = batches[state.position]
            weights = loss_weights(task_ids, len(tasks), settings.protocol)  # from the global batch
            loss = train_step(model, optimizer, scaler, splits, shard(task_ids, example_ids, rank, world), weights,
                              state, settings, device, amp_dtype, pad_id)
            if state.nonfinite:  # skipped (train_step): the same batch again, the schedule waiting
                continue
            epochs_done, at_eval, over = advance(state, task_ids, names, n, settings)
            if state.position == n:  # epoch over: the sampler's state now is where the next one starts
                state.epoch, state.position, state.sampler_state, batches = state.epoch + 1, 0, sampler.state_dict(), None
            if first is None:
                first = (clock(device) - t0, state.timing["examples"] - start[1], state.timing["tokens"] - start[2])
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")

            if at_eval or over or (settings.save_every and state.step % settings.save_every == 0):
                state.timing["train_seconds"] += clock(device) - t0
                if at_eval or over:
                    dev = evaluate(model, tasks, device, amp_dtype, settings.eval_batch_size, pad_id)
                    entry = {"step": state.step, "epoch": round(epochs_done, 4), "train_loss": loss, "lr": lr,
                             "weights": sampler.weights, "dev": dev}
                    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
                    for name in record_evaluation(state, entry, names, finite):
                        if name in settings.keep_best:
                            save_best(run_dir, model, tokenizer, name, state, settings, tasks[0].spec.labels)
                    if rank == 0:
                        append_log(run_dir / "log.jsonl", entry)
                        bar.write(f"step {state.step} epoch {entry['epoch']:.2f} loss {loss:.4f} | "
                                  + " ".join(f"{n} {dev[n]['score']:.2f}" for n in names))
                    if record is not None:
                        write_json(run_dir / "record.json", {**record, "status": "running", "best": state.best,
                                                             "score": state.best.get(names[0], {}).get("score"),
                                                             "step": state.step})
                    if not over and settings.early_stopping and state.stale >= settings.early_stopping:
                        over = True
                        if rank == 0:
                            bar.write(f"early stopping: no better {names[0]} score in {state.stale} evaluations")
                if not over or settings.keep_checkpoint:  # the last one would be deleted at once
                    save_checkpoint(run_dir, model, optimizer, scaler, state, settings)
                t0 = clock(device)
            if over:
                break
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM under tl.study.locks.interruptible: the tools print it
        raise KeyboardInterrupt(f"interrupted at step {state.step}") from None
    bar.close()
    if world > 1:
        dist.barrier()  # rank 0's files (best/, checkpoint/) are complete before any rank reads them
    return summarize(state, tasks, first, state.step - start[0])
