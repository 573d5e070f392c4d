"""Small helpers shared by the tests (no pytest, no transformers: cheap to import)."""
import json
import importlib.util
from pathlib import Path

import numpy as np

from tl.data import TokenizedSplit

ROOT = Path(__file__).resolve().parents[1]


def load_tool(name: str):
    """tools/<name>.py as a module of its own (a fresh one per call), to call its main() in-process."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example(split: TokenizedSplit, i: int) -> tuple:
    """(ids, type_ids) of example i of a split."""
    a, b = split.offsets[i], split.offsets[i + 1]
    return split.ids[a:b], split.type_ids[a:b]


def random_split(n: int, rng: np.random.Generator, num_labels: int = 2, regression: bool = False) -> TokenizedSplit:
    """n examples of unequal lengths (3..20 tokens): random ids below 64 and labels."""
    lengths = rng.integers(3, 21, size=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = rng.integers(1, 64, size=offsets[-1]).astype(np.int32)
    labels = rng.normal(size=n).astype(np.float32) if regression else rng.integers(0, num_labels, size=n)
    return TokenizedSplit(ids=ids, type_ids=np.zeros_like(ids), offsets=offsets, lengths=lengths.astype(np.int32),
                          labels=labels)


def checkpoint_step(state) -> int:
    """The step of a run's checkpoint/state.json, -1 while there is none: the checkpoint folder is
    replaced by a rename at each save, so the file can vanish between a look and a read."""
    try:
        return json.loads(state.read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return -1
