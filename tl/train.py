"""The training loop: `fit()` fine-tunes a MultiTaskModel on one or more tasks, `evaluate()` scores it.

It follows the paper's protocol (`shared/paper/PROTOCOL.md`): AdamW (lr 2e-5, no weight decay),
linear decay to 0 with optional warmup, gradient-norm clipping at 1.0, batch 128, 10 epochs with a
dev evaluation every half epoch, the best dev checkpoint being the run's score. One function reads
top to bottom (nanoGPT's train.py): schedule, micro-steps under autocast, gradient all-reduce (DDP),
unscale, clip, step, zero_grad, evaluate/checkpoint, log. No callbacks, no trainer classes.

Three invariants are tested:
- The loss of an optimizer step is the sum of per-example losses divided by the number of examples
  in the whole step (all micro-batches, all ranks), counted before any backward pass. So
  (batch 8, micro 8), (batch 8, micro 2) and 2 ranks x 4 give the same gradient (torchtune, torchtitan).
- A run killed at any moment (`kill -9`) and started again continues from its last checkpoint and ends
  with exactly the parameters and metrics of an uninterrupted run (CPU): the checkpoint holds the
  optimizer, schedule, scaler, RNG and the sampler's state at the start of the current epoch.
- Checkpoints, records and logs are written atomically (temp + rename); a non-finite model is never
  kept as best.

Distributed data parallel (`torchrun`): when `torch.distributed` is initialised, every rank takes its
own rows of each global batch (`tl.sampling.shard`), each rank's loss is divided by the example count
of the whole global step, and gradients are summed over ranks with one all-reduce of a flat buffer
(which also covers heads that some rank did not use in a step). Every rank then takes the same
optimizer step, so N processes compute the run of one process with the same global batch (tested:
parameters equal to 1e-5). Dev evaluation is split over the ranks the same way and the predictions
summed back. Only rank 0 writes files (checkpoints, records, logs); the checkpoint holds every rank's
RNG state, so a DDP run resumes exactly too. Dropout draws differ per rank (seed + rank).

`--compile` wraps each Transformer layer in `torch.compile(dynamic=True)`: the layers are where the
time goes, and their token count N changes with every batch (dynamic shapes, one compilation). The
unpadding index ops and the per-task heads stay eager. Checkpoints still hold the plain module's keys.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import platform
import random
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from tl.cli import arg
from tl.heads import MultiTaskModel
from tl.model import Encoder
from tl.metrics import compute_metrics, headline_score
from tl.sampling import MultiTaskSampler, shard, task_weights

CHECKPOINT_FORMAT = 1
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainSettings:
    """Optimisation settings of one run; the defaults are the paper's (PROTOCOL.md)."""

    epochs: float = arg(10.0, "training epochs (an epoch of a multi-task run = the sum of the tasks' sizes)")
    max_steps: int = arg(0, "stop after this many optimizer steps, the schedule following; 0: no cap")
    batch_size: int = arg(128, "examples per optimizer step, over all processes")
    micro_batch: int = arg(0, "accumulate micro-batches of this size per process; 0: the whole batch at once")
    lr: float = arg(2e-5, "peak learning rate of AdamW")
    weight_decay: float = arg(0.0, "AdamW weight decay (biases and LayerNorm excluded)")
    warmup_ratio: float = arg(0.0, "fraction of the steps spent warming the learning rate up")
    max_grad_norm: float = arg(1.0, "clip the gradient norm to this")
    precision: str = arg("auto", "fp32, bf16 or fp16 (with a gradient scaler); auto: bf16 on CUDA where "
                         "supported, else fp16 there, fp32 on CPU", choices=PRECISIONS)
    evals_per_epoch: int = arg(2, "dev evaluations per epoch (the paper: every half epoch)")
    eval_batch_size: int = arg(256, "examples per evaluation batch")
    early_stopping: int = arg(0, "stop after this many evaluations without a better target score; 0: off")
    seed: int = 42
    sampler: str = arg("dynamic", "multi-task sampler: uniform, size, temperature, dynamic, dynamic-softmax")
    schedule: str = arg("heterogeneous", "multi-task batches: heterogeneous, homogeneous, partitioned")
    temperature: float = arg(2.0, "T of the temperature sampler (weights ~ size^(1/T))")
    length_pool: int = arg(0, "batches pooled for length sorting; 0: the whole epoch for one task, 1 for several")
    save_every: int = arg(0, "also write a resume checkpoint every N steps; 0: at each evaluation only")
    max_nonfinite: int = arg(5, "consecutive non-finite losses (fp32/bf16) before the run fails")
    keep_best: tuple = ()  # tasks whose best model is written to best/ (best/<TASK>/ when several)
    keep_checkpoint: bool = arg(False, "keep checkpoint/ (model + optimizer state, for resuming) once the run "
                                "is complete; by default it is deleted and best/ stays")
    progress: bool = arg(True, "show progress bars")
    compile: bool = arg(False, "torch.compile the encoder's layers (dynamic shapes; the first steps are slow)")

    def __post_init__(self):
        if self.batch_size <= 0:
            raise ValueError(f"--batch-size must be positive, got {self.batch_size}")
        if self.micro_batch < 0 or (self.micro_batch and self.batch_size % self.micro_batch):
            raise ValueError(
                f"--micro-batch {self.micro_batch} must divide --batch-size {self.batch_size} "
                f"(for example --micro-batch {math.gcd(self.batch_size, max(self.micro_batch, 1))})"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ValueError("set --epochs > 0 or --max-steps > 0")
        if self.evals_per_epoch <= 0:
            raise ValueError(f"--evals-per-epoch must be positive, got {self.evals_per_epoch}")


@dataclass
class TaskData:
    """One task of a run: its spec, head, tokenized train split and dev split(s)."""

    spec: object  # tl.tasks.TaskSpec
    train: object  # tl.data.TokenizedSplit
    dev: dict = field(default_factory=dict)  # split name ("dev", "dev_mismatched") -> TokenizedSplit
    reference: float | None = None  # single-task dev score (x100), for dynamic sampling


# ---------------------------------------------------------------------------------------------
# batches


def collate_rows(splits: list, task_ids: np.ndarray, example_ids: np.ndarray, pad_id: int) -> dict:
    """Rows (task_ids[i], example_ids[i]) of several tokenized splits -> one padded batch.

    Pads to the longest row (dynamic padding). Labels are float32 for every task: class ids are
    exact in float32 and the heads cast them back; regression targets stay real.
    """
    rows = []
    for t, i in zip(task_ids.tolist(), example_ids.tolist()):
        s = splits[t]
        a, b = s.offsets[i], s.offsets[i + 1]
        rows.append((s.ids[a:b], s.type_ids[a:b], s.labels[i]))
    T = max(len(r[0]) for r in rows)
    ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    types = np.zeros((len(rows), T), dtype=np.int64)
    mask = np.zeros((len(rows), T), dtype=np.int64)
    for r, (x, y, _) in enumerate(rows):
        ids[r, : len(x)] = x
        types[r, : len(y)] = y
        mask[r, : len(x)] = 1
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "token_type_ids": torch.from_numpy(types),
        "task_ids": torch.as_tensor(task_ids, dtype=torch.long),
        "labels": torch.tensor([r[2] for r in rows], dtype=torch.float32),
    }


def to_device(batch: dict, device: torch.device) -> dict:
    # pinned memory + non_blocking overlaps the copy with compute on CUDA; a no-op on CPU
    if device.type == "cuda":
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return {k: v.to(device) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def predict(model: MultiTaskModel, task: int, split, device, amp_dtype, batch_size: int, pad_id: int) -> np.ndarray:
    """Predictions of head `task` on every example of `split`, in the split's order: class ids, or
    real values for a regression head. Examples are batched by length, so little padding is run.
    Under DDP each rank predicts every world-th example of that order and the ranks' predictions
    (zeros elsewhere) are summed, so every rank returns them all."""
    model.eval()
    rank, world = dist_info()
    order = np.argsort(split.lengths, kind="stable")[rank::world]
    out = np.zeros(len(split.lengths), dtype=np.float64)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = to_device(collate_rows([split], np.zeros(len(idx), dtype=np.int64), idx, pad_id), device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype != torch.float32):
            hidden = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            logits = model.heads[model.specs[task].task](model.features(hidden)).float()
        if model.specs[task].regression:
            out[idx] = logits.squeeze(-1).cpu().numpy()
        else:
            out[idx] = logits.argmax(-1).cpu().numpy()
    if world > 1:
        total = torch.from_numpy(out).to(device)
        dist.all_reduce(total)  # each example is non-zero on one rank only: the sum is exact
        out = total.cpu().numpy()
    return out


def evaluate(model: MultiTaskModel, tasks: list[TaskData], device, amp_dtype, batch_size: int, pad_id: int) -> dict:
    """{task name: metrics} on every dev split; a second split's metrics are prefixed with its name
    (MNLI: `dev_mismatched_accuracy`). `score` is the headline metric x100 (PROTOCOL.md)."""
    results = {}
    for t, task in enumerate(tasks):
        metrics = {}
        for split_name, split in task.dev.items():
            preds = predict(model, t, split, device, amp_dtype, batch_size, pad_id)
            labels = np.asarray(split.labels)
            m = compute_metrics(task.spec, preds if task.spec.is_regression else preds.astype(np.int64), labels)
            prefix = "" if split_name == "dev" else split_name + "_"
            metrics.update({prefix + k: float(v) for k, v in m.items()})
        metrics["score"] = float(headline_score(task.spec, metrics))
        results[task.spec.name] = metrics
    model.train()
    return results


# ---------------------------------------------------------------------------------------------
# files: atomic JSON, checkpoint folders


def write_json(path: Path, obj) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one. Under
    DDP only rank 0 writes (every rank holds the same values; two writers would race on the temp file)."""
    if dist_info()[0] != 0:
        return
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=_json_default)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (tuple, set, Path)):
        return list(o) if not isinstance(o, Path) else str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def swap_dir(tmp: Path, final: Path) -> None:
    """Replace folder `final` by `tmp`. A kill between the two renames leaves `final.old`, which
    `resolve_dir` still finds, so a finished checkpoint is never lost."""
    old = final.with_name(final.name + ".old")
    if old.exists() and final.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def resolve_dir(final: Path) -> Path | None:
    final = Path(final)
    for candidate in (final, final.with_name(final.name + ".old")):
        if (candidate / "state.json").exists() or (candidate / "model.safetensors").exists():
            return candidate
    return None


def save_model(model: MultiTaskModel, directory: Path, tokenizer=None) -> None:
    """Encoder (Hugging Face layout), heads and tokenizer into `directory` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(directory)
    model.save_heads(directory)
    if tokenizer is not None:
        tokenizer.save(directory)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# optimisation


def make_optimizer(model: torch.nn.Module, settings: TrainSettings, device) -> torch.optim.Optimizer:
    """AdamW; with weight decay, biases and LayerNorm weights are excluded (as BERT's recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # the fused kernel: one launch for all parameters on CUDA; on CPU no temporaries for the 11.7M-entry
    # word embeddings (MiniLM SST-2 step 464 -> 329 ms; agrees with the foreach path to ~1e-7)
    return torch.optim.AdamW(groups, lr=settings.lr, fused=device.type in ("cuda", "cpu"))


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    By default glibc serves every allocation over 32 MB (a MiniLM attention tensor at batch 128 on RTE is
    100 MB) with a fresh mmap and unmaps it on free, so each training step faults in and zeroes its largest
    buffers anew: 130,000-200,000 page faults and 0.6-0.9 s of system time per MRPC step at batch 128 on 2
    cores. With mmap off and the trim threshold at 2 GB, freed blocks are reused: same-machine A/B, MRPC
    batch 128 2810/3038 -> 2328/2385 ms per step, SST-2 unchanged (556/499 -> 524/513). The process keeps
    its peak memory until exit, as a training run needs it again at the next step anyway. Process-wide, so
    the command-line tools call it, never the library. Returns False (changing nothing) off glibc."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def clipped_step(optimizer: torch.optim.Optimizer, parameters, max_norm: float) -> torch.Tensor:
    """Clip the gradients' total norm to `max_norm`, then step; returns the norm before clipping.

    The same update as `clip_grad_norm_` followed by `optimizer.step()`: each gradient is scaled by
    min(1, max_norm / (norm + 1e-6)). A fused optimizer (make_optimizer's AdamW) does the scaling inside
    its own pass over the gradients, as a gradient scale (it divides by max(1, (norm + 1e-6) / max_norm));
    that saves clip_grad_norm_'s separate read and write of every gradient (22.7M floats for MiniLM:
    clip + step 33 -> 26.5 ms per step on 2 CPU cores). Unclipped steps are bit-identical; clipped ones agree to
    float rounding. Not for fp16 with a GradScaler, which owns the optimizer's gradient scale."""
    parameters = [p for p in parameters if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
    if not all(group.get("fused") for group in optimizer.param_groups):
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
        optimizer.step()
        return norm
    # the attributes GradScaler.step sets for fused optimizers, read by Adam(W).step
    optimizer.grad_scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0)
    optimizer.found_inf = None
    try:
        optimizer.step()
    finally:
        del optimizer.grad_scale, optimizer.found_inf
    return norm


def linear_schedule(optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the peak lr, then linear decay to 0 at `total_steps` (run_glue's default)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def resolve_precision(precision: str, device) -> torch.dtype:
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def allreduce_grads(model: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """Sum gradients and the step's loss over ranks in one flat buffer; returns the summed loss.

    A parameter without a gradient on this rank (a head whose task had no rows here) counts as zeros;
    one that no rank touched keeps `grad = None`, as in a single process, so AdamW skips it there too
    (a zero gradient would still move it by momentum). Every rank then takes the same step.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    used = torch.tensor([float(p.grad is not None) for p in params], device=loss.device)  # (P,)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [used, loss.reshape(1).float()])
    dist.all_reduce(flat)
    offset = 0
    for p, g, n_used in zip(params, grads, flat[-len(params) - 1 : -1].tolist()):
        n = p.numel()
        p.grad = g.copy_(flat[offset : offset + n].view_as(g)) if n_used else None
        offset += n
    return flat[-1]


# ---------------------------------------------------------------------------------------------
# the loop


def fit(
    model: MultiTaskModel,
    tasks: list[TaskData],
    settings: TrainSettings,
    run_dir: Path,
    *,
    device: torch.device | str = "cpu",
    pad_id: int = 0,
    tokenizer=None,
    record: dict | None = None,
) -> dict:
    """Train `model` on `tasks` (tasks[0] is the target) and return the run's summary:
    `best` (per task, the best dev metrics with their step and epoch), `history`, `timing`.

    `run_dir` receives `checkpoint/` (latest, for resuming), `best/` (the best model of the tasks in
    `settings.keep_best`), `log.jsonl` (one line per evaluation) and, if `record` is given, the run
    record `record.json` (updated at each evaluation, status "complete" only at the end).
    """
    device = torch.device(device)
    run_dir = Path(run_dir)
    rank, world = dist_info()
    is_main = rank == 0
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    amp_dtype = resolve_precision(settings.precision, device)
    names = [t.spec.name for t in tasks]
    target = names[0]
    if settings.batch_size % world:
        raise ValueError(f"--batch-size {settings.batch_size} must be divisible by the {world} processes")

    # ---- sampler, steps, schedule
    sizes = {t.spec.name: len(t.train) for t in tasks}
    # one task: sort the whole epoch by length (nearly pad-free batches, as tl.data.bucket_batches);
    # several: keep each batch's task mixture exact (the paper's heterogeneous batches)
    pool = settings.length_pool or (math.ceil(sum(sizes.values()) / settings.batch_size) if len(tasks) == 1 else 1)
    sampler = MultiTaskSampler(
        sizes,
        lengths={t.spec.name: np.asarray(t.train.lengths) for t in tasks},
        batch_size=settings.batch_size,
        schedule=settings.schedule,
        seed=settings.seed,
        length_pool=pool,
    )
    steps_per_epoch = sampler.steps_per_epoch
    total_steps = math.ceil(settings.epochs * steps_per_epoch) if settings.epochs > 0 else settings.max_steps
    if settings.max_steps > 0:
        total_steps = min(total_steps, settings.max_steps)
    n_evals = int(total_steps * settings.evals_per_epoch // steps_per_epoch)
    eval_steps = {math.ceil(i * steps_per_epoch / settings.evals_per_epoch) for i in range(1, n_evals + 1)}
    eval_steps = {s for s in eval_steps if s <= total_steps} | {total_steps}
    micro = settings.micro_batch or settings.batch_size

    # ---- model, optimizer, schedule, scaler
    seed_everything(settings.seed + rank)  # rank 0 is a single process's run; other ranks draw other dropout
    model.to(device).train()
    if world > 1:
        for p in model.parameters():  # identical start on every rank
            dist.broadcast(p.data, 0)
    if settings.compile:
        for layer in model.encoder.encoder["layer"]:
            layer.compile(dynamic=True)  # in place: parameter names (and checkpoints) stay as they are
    optimizer = make_optimizer(model, settings, device)
    scheduler = linear_schedule(optimizer, total_steps, int(settings.warmup_ratio * total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    step, best, history, stale, nonfinite = 0, {}, [], 0, 0
    epoch_start_state, sampler_epoch = None, -1  # sampler state before generating epoch `sampler_epoch`
    timing = {"train_seconds": 0.0, "examples": 0, "tokens": 0}
    ckpt_dir = run_dir / "checkpoint"
    found = resolve_dir(ckpt_dir)
    if found is not None:  # ---- resume
        state = json.loads((found / "state.json").read_text())
        if state["format_version"] != CHECKPOINT_FORMAT or state["total_steps"] != total_steps:
            raise ValueError(f"{found}: checkpoint from other settings (total_steps {state['total_steps']} vs {total_steps}); "
                             f"delete {run_dir} to start again")
        model.encoder.load_state_dict(Encoder.from_pretrained(found).state_dict())
        model.load_heads(found)
        extra = torch.load(found / "optim.pt", weights_only=False, map_location="cpu")
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        scaler.load_state_dict(extra["scaler"])
        rngs = extra.get("rng_ranks") or [extra["rng"]]
        if len(rngs) != world and world > 1:
            warnings.warn(f"{found}: checkpoint of {len(rngs)} process(es) resumed on {world}; dropout draws will differ")
        _set_rng_state(rngs[rank] if rank < len(rngs) else extra["rng"])
        step, best, history, stale = state["step"], state["best"], state["history"], state["stale"]
        epoch_start_state, sampler_epoch, timing = state["sampler"], state["sampler_epoch"], state["timing"]
        if is_main:
            _rewrite_log(run_dir / "log.jsonl", step)
            print(f"resuming {run_dir.name} from step {step}/{total_steps}", flush=True)

    def save_checkpoint():
        rngs = [_rng_state()]
        if world > 1:  # a collective: every rank calls save_checkpoint, rank 0 writes
            rngs = [None] * world
            dist.all_gather_object(rngs, _rng_state())
        if not is_main:
            return
        tmp = run_dir / "checkpoint.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        save_model(model, tmp)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(), "rng": rngs[0], "rng_ranks": rngs}, tmp / "optim.pt")
        write_json(tmp / "state.json", {
            "format_version": CHECKPOINT_FORMAT, "step": step, "epoch": step / steps_per_epoch,
            "total_steps": total_steps, "steps_per_epoch": steps_per_epoch, "best": best,
            "history": history, "stale": stale, "sampler": epoch_start_state, "sampler_epoch": sampler_epoch, "timing": timing,
            "settings": asdict(settings),
        })
        swap_dir(tmp, ckpt_dir)

    def save_best(task: str):
        if not is_main:
            return
        final = run_dir / "best" if len(settings.keep_best) <= 1 else run_dir / "best" / task
        tmp = final.with_name(final.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        save_model(model, tmp, tokenizer)
        write_json(tmp / "state.json", {"task": task, "step": step, "epoch": step / steps_per_epoch, "metrics": best[task]})
        swap_dir(tmp, final)

    # ---- train
    bar = tqdm(total=total_steps, initial=step, desc=f"{run_dir.name}", disable=not (settings.progress and is_main),
               dynamic_ncols=True)
    batches, last_loss = None, float("nan")
    # this call's first step, kept apart in the timing: it pays one-time costs (the optimizer's state,
    # first touches of memory) that a long run spreads over thousands of steps
    first_step, counted, step0 = None, (timing["examples"], timing["tokens"]), step
    t0 = time.perf_counter()
    while step < total_steps:
        epoch, position = divmod(step, steps_per_epoch)
        if batches is None and epoch_start_state is not None:
            # resumed: replay the sampler from the start of the checkpoint's epoch (same batches, and
            # the per-task cursors end where the uninterrupted run's did)
            sampler.load_state_dict(epoch_start_state)
            batches = sampler.epoch_batches(sampler_epoch)
        if batches is None or sampler_epoch != epoch:
            # dynamic sampling: weights from the latest dev scores, recomputed at each epoch start
            current = {n: history[-1]["dev"][n]["score"] for n in names} if history else None
            reference = {t.spec.name: t.reference for t in tasks if t.reference is not None}
            if len(tasks) > 1:
                sampler.set_weights(task_weights(settings.sampler, sizes, temperature=settings.temperature,
                                                 reference=reference or None, current=current))
            epoch_start_state, sampler_epoch = sampler.state_dict(), epoch
            batches = sampler.epoch_batches(epoch)
        task_ids, example_ids = batches[position]
        n_global = len(task_ids)  # every example of the step weighs 1 / n_global, on every rank
        mine = shard(task_ids, example_ids, rank, world)

        loss_sum = torch.zeros((), device=device)
        for start in range(0, len(mine[0]), micro):
            batch = collate_rows([t.train for t in tasks], mine[0][start : start + micro], mine[1][start : start + micro], pad_id)
            timing["examples"] += len(batch["labels"])
            timing["tokens"] += int(batch["attention_mask"].sum())
            batch = to_device(batch, device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype != torch.float32):
                total, _ = model.loss_sum(batch)
            loss = total / n_global
            scaler.scale(loss).backward()
            loss_sum += loss.detach()
        if world > 1:
            loss_sum = allreduce_grads(model, loss_sum)
        last_loss = float(loss_sum)
        if not math.isfinite(last_loss) and not scaler.is_enabled():
            # fp16 overflows are the scaler's business (it skips the step); elsewhere a NaN is a fault
            nonfinite += 1
            optimizer.zero_grad(set_to_none=True)
            warnings.warn(f"step {step + 1}: non-finite loss {last_loss}; step skipped ({nonfinite} in a row)")
            if nonfinite >= settings.max_nonfinite:
                raise FloatingPointError(f"{nonfinite} non-finite losses in a row at step {step + 1}: lower --lr, "
                                         f"or use --precision fp32")
        else:
            nonfinite = 0
            if scaler.is_enabled():
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
            else:
                clipped_step(optimizer, model.parameters(), settings.max_grad_norm)
            optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1
        if first_step is None:
            first_step = (time.perf_counter() - t0, timing["examples"] - counted[0], timing["tokens"] - counted[1])
        bar.update(1)
        bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}",
                        ex_s=f"{timing['examples'] * world / max(1e-9, timing['train_seconds'] + time.perf_counter() - t0):.1f}")

        if step in eval_steps:
            timing["train_seconds"] += time.perf_counter() - t0
            dev = evaluate(model, tasks, device, amp_dtype, settings.eval_batch_size, pad_id)
            entry = {"step": step, "epoch": round(step / steps_per_epoch, 4), "train_loss": last_loss,
                     "lr": scheduler.get_last_lr()[0], "weights": sampler.weights, "dev": dev}
            history.append(entry)
            finite = all(torch.isfinite(p).all() for p in model.parameters())
            improved_target = False
            for name in names:
                score = dev[name]["score"]
                if finite and math.isfinite(score) and (name not in best or score > best[name]["score"]):
                    best[name] = {**dev[name], "step": step, "epoch": entry["epoch"]}
                    improved_target |= name == target
                    if name in settings.keep_best:
                        save_best(name)
            stale = 0 if improved_target else stale + 1
            if is_main:
                _append_log(run_dir / "log.jsonl", entry)
                bar.write(f"step {step} epoch {entry['epoch']:.2f} loss {last_loss:.4f} | "
                          + " ".join(f"{n} {dev[n]['score']:.2f}" for n in names))
            if step < total_steps or settings.keep_checkpoint:  # the last one would be deleted at once
                save_checkpoint()
            if record is not None and is_main:
                write_json(run_dir / "record.json", {**record, "status": "running", "best": best,
                                                     "score": best.get(target, {}).get("score"), "step": step})
            t0 = time.perf_counter()
            if settings.early_stopping and stale >= settings.early_stopping:
                if is_main:
                    bar.write(f"early stopping: no better {target} score in {stale} evaluations")
                break
        elif settings.save_every and step % settings.save_every == 0:
            timing["train_seconds"] += time.perf_counter() - t0
            save_checkpoint()
            t0 = time.perf_counter()
    bar.close()
    if world > 1:
        dist.barrier()  # rank 0's files (best/, checkpoint/) are complete before any rank reads them

    seconds = max(timing["train_seconds"], 1e-9)
    # steady state: without this call's first step (when there was more than one)
    first_step = first_step if first_step is not None and step - step0 > 1 else (0.0, 0, 0)
    steady = max(timing["train_seconds"] - first_step[0], 1e-9)
    summary = {
        "best": best,
        "history": history,
        "steps": step,
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "timing": {
            "train_seconds": round(timing["train_seconds"], 3),
            "examples_per_second": timing["examples"] * world / seconds,
            "tokens_per_second": timing["tokens"] * world / seconds,
            "steady_seconds": round(steady, 3),
            "steady_examples": (timing["examples"] - first_step[1]) * world,
            "steady_tokens": (timing["tokens"] - first_step[2]) * world,
        },
    }
    return summary


def _append_log(path: Path, entry: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(entry, default=_json_default) + "\n")


def _rewrite_log(path: Path, upto_step: int) -> None:
    """On resume, drop log lines written after the checkpoint (they will be written again)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= upto_step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)
