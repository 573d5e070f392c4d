"""Tokenized splits: a tokenize-once on-disk cache (memory-mapped numpy, named by a sha256 of all that
changes the arrays, checked at every load), and `collate`, which pads a batch to its longest row (tl/sampling.py
sorts batches by length), where the paper's code padded to 128 tokens (docs/PROTOCOL.md, "Known weak points").
Notation: N examples in a split, L tokens in all, B rows in a batch, T its longest row.
Imports tl.tasks and tl.hub (sha256_file).
"""
import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from tl.hub import sha256_file
from tl.tasks import TaskSpec, read_split, split_path

FORMAT_VERSION = 2  # 2: sizes and sha256 of the arrays in meta.json
ARRAYS = ("ids", "type_ids", "offsets", "lengths", "labels")
CHUNK = 4096               # examples per tokenizer call
PROGRESS_MIN_EXAMPLES = 20000  # below this, tokenizing takes a moment and a bar is noise


@dataclass
class TokenizedSplit:
    """All examples of a split back to back: example i is ids[offsets[i]:offsets[i + 1]]."""

    ids: np.ndarray       # (L,) int32 token ids
    type_ids: np.ndarray  # (L,) int8 segment ids (0 = first sentence, 1 = second)
    offsets: np.ndarray   # (N + 1,) int64, offsets[0] = 0, offsets[N] = L
    lengths: np.ndarray   # (N,) int32 tokens per example, special tokens included
    labels: np.ndarray    # (N,) int64 class ids, or float32 for regression

    def __len__(self) -> int:
        return len(self.lengths)

    def subset(self, indices) -> "TokenizedSplit":
        """The examples `indices` (M,), in that order, copied into memory."""
        indices = np.asarray(indices, dtype=np.int64)
        lengths = np.asarray(self.lengths)[indices]
        offsets = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))
        # position of each new token in the old flat arrays: old start of its example + its rank in it
        starts = np.asarray(self.offsets)[indices]
        positions = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])  # (L',)
        return TokenizedSplit(ids=np.asarray(self.ids[positions]), type_ids=np.asarray(self.type_ids[positions]),
                              offsets=offsets, lengths=lengths, labels=np.asarray(self.labels)[indices])


def tokenize(text_a: list, text_b: Optional[list], labels: np.ndarray, tokenizer, max_len: int,
             progress: bool = True, desc: str = "tokenizing") -> TokenizedSplit:
    """Encode sentences (or pairs, truncated by the tokenizer) into a TokenizedSplit, in chunks."""
    encoded = []  # (ids, type_ids) per example
    bar = None if progress and len(text_a) >= PROGRESS_MIN_EXAMPLES else True  # None: only on a terminal
    for start in tqdm(range(0, len(text_a), CHUNK), desc=desc, unit="chunk", disable=bar):
        chunk_b = None if text_b is None else text_b[start:start + CHUNK]
        encoded += tokenizer.encode_batch(text_a[start:start + CHUNK], chunk_b, max_len=max_len)
    lengths = np.array([len(e[0]) for e in encoded], dtype=np.int32)
    offsets = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))
    flat = itertools.chain.from_iterable
    return TokenizedSplit(ids=np.fromiter(flat(e[0] for e in encoded), dtype=np.int32, count=offsets[-1]),
                          type_ids=np.fromiter(flat(e[1] for e in encoded), dtype=np.int8, count=offsets[-1]),
                          offsets=offsets, lengths=lengths, labels=np.asarray(labels))


def load_tokenized(spec: TaskSpec, split: str, tokenizer, max_len: int = 128, data_dir="data/glue",
                   cache_dir=None, progress: bool = True) -> TokenizedSplit:
    """A split tokenized with `tokenizer` at `max_len`: from the cache in `cache_dir` when there (arrays
    memory-mapped, read-only), else read, tokenized and saved there. `cache_dir=None`: no cache."""
    path = split_path(spec, data_dir, split)
    if cache_dir is not None:
        if not path.is_file():
            read_split(spec, data_dir, split)  # raises the error that says how to get the file
        fields = {"format": FORMAT_VERSION, "file_sha256": file_sha256(path), "tokenizer": tokenizer.fingerprint,
                  "max_len": max_len, "columns": [spec.text_a, spec.text_b, spec.label], "labels": spec.labels,
                  "has_header": spec.has_header, "split": split}
        key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]
        folder = Path(cache_dir) / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', spec.name)}-{split}-{key}"
        if (cached := _open_cached(folder)) is not None:
            return cached
    examples = read_split(spec, data_dir, split)
    tokenized = tokenize(examples.text_a, examples.text_b, examples.labels, tokenizer, max_len, progress,
                         desc=f"{spec.name} {split}")
    if cache_dir is None:
        return tokenized
    _save(tokenized, folder, {**fields, "task": spec.name, "file": str(path), "examples": len(tokenized),
                              "skipped_lines": examples.skipped})
    return _open_cached(folder)


def file_sha256(path: Path) -> str:
    """sha256 of a task file's bytes, hashed once per process while its size and mtime stay the same."""
    stat = Path(path).stat()
    return _remembered_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=256)
def _remembered_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def data_identity(specs: list, data_dir) -> dict[str, str]:
    """{"RTE/train.tsv": sha256, ...} of every file a run reads for these tasks (all splits but test)."""
    return {str(Path(s.dirname) / name): file_sha256(split_path(s, data_dir, split))
            for s in specs for split, name in s.files.items() if split != "test"}


def _open_cached(folder: Path) -> TokenizedSplit | None:
    """The cache entry in `folder`, memory-mapped; None when absent or damaged (then removed, to be rebuilt)."""
    if not folder.is_dir():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
        for name in ARRAYS:
            path = folder / f"{name}.npy"
            if path.stat().st_size != meta["sizes"][name] or sha256_file(path) != meta["sha256"][name]:
                raise ValueError(f"{path.name} differs from meta.json")
        return TokenizedSplit(**{name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS})
    except (OSError, ValueError, KeyError, TypeError) as e:  # np.load refuses pickled objects: ValueError
        warnings.warn(f"token cache {folder} is damaged ({e}); rebuilding it")
        aside = folder.with_name(f".{folder.name}.{os.getpid()}.damaged")
        with contextlib.suppress(OSError):
            os.replace(folder, aside)  # one rename: a concurrent reader keeps its open files
        shutil.rmtree(aside, ignore_errors=True)
        return None


def _save(tokenized: TokenizedSplit, folder: Path, meta: dict) -> None:
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for name in ARRAYS:
            np.save(tmp / f"{name}.npy", getattr(tokenized, name))
        meta["sizes"] = {name: (tmp / f"{name}.npy").stat().st_size for name in ARRAYS}
        meta["sha256"] = {name: sha256_file(tmp / f"{name}.npy") for name in ARRAYS}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        os.replace(tmp, folder)
    except OSError as e:  # another process (a DDP rank) saved the same entry first: keep theirs
        if not folder.is_dir():
            raise OSError(f"{folder}: cannot write the token cache ({e.strerror or e}); free some space or "
                          f"choose another --cache-dir") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def collate(splits: list, task_ids, example_ids, pad_id: int, multiple: int = 1) -> dict:
    """Rows (task_ids[i], example_ids[i]) (B,) of several splits as one batch padded to T, its longest row
    rounded up to a multiple of `multiple`: input_ids, attention_mask, token_type_ids (B, T), task_ids (B,)
    long; labels (B,) float32 (class ids are exact in float32; the heads cast them back)."""
    task_ids = np.asarray(task_ids, dtype=np.int64)
    example_ids = np.asarray(example_ids, dtype=np.int64)
    lengths = np.zeros(len(task_ids), dtype=np.int64)                # (B,)
    for t in np.unique(task_ids):
        rows = task_ids == t
        lengths[rows] = splits[t].lengths[example_ids[rows]]
    T = -(-int(lengths.max()) // multiple) * multiple
    mask = np.arange(T) < lengths[:, None]                           # (B, T)
    ids = np.full(mask.shape, pad_id, dtype=np.int64)
    types = np.zeros(mask.shape, dtype=np.int64)
    labels = np.zeros(len(task_ids), dtype=np.float32)
    for t in np.unique(task_ids):
        rows, split = np.flatnonzero(task_ids == t), splits[t]
        e, m = example_ids[rows], mask[rows]
        source = np.where(m, split.offsets[e][:, None] + np.arange(T), 0)  # (b, T) positions in ids
        ids[rows] = np.where(m, split.ids[source], pad_id)
        types[rows] = np.where(m, split.type_ids[source], 0)
        labels[rows] = split.labels[e]
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask.astype(np.int64)),
            "token_type_ids": torch.from_numpy(types), "task_ids": torch.tensor(task_ids),
            "labels": torch.from_numpy(labels)}


def subsample(n_total: int, n: int, seed: int) -> np.ndarray:
    """`n` of the indices 0..n_total-1, sorted: the first n of one seeded permutation, so for one seed a
    smaller subsample lies inside a larger one (the nested sizes of the dataset-size experiments)."""
    if not 0 < n <= n_total:
        raise ValueError(f"cannot subsample {n} of {n_total} examples (need 0 < n <= {n_total})")
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:n])
