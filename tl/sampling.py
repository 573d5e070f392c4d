"""Multi-task sampling: how much of each task to train on, and in which batches, under two protocols.

docs/PROTOCOL.md puts them side by side, rule by rule: "tl" (fair epochs, the default) and "authors" (orionw/MTLvsIFT,
multi_dataloader.py `MTLDataset` + `MTLRandomSampler` as run_glue.py `train` runs them). Deterministic from a seed.
Self-contained: imports only numpy and the standard library, nothing from tl, so this file can be
copied alone into other code.

Notation: T tasks, N rows in the epoch, B = batch_size, S = batches in the epoch, q_t = the
authors' per-group quota of task t, m = the authors' number of groups.
"""
from __future__ import annotations

import math
import zlib

import numpy as np

SAMPLERS = ("uniform", "size", "temperature", "dynamic", "dynamic-softmax")
SCHEDULES = ("heterogeneous", "homogeneous", "partitioned")
PROTOCOLS = ("tl", "authors")

# Seed-sequence tags keep the random streams apart: example permutations, the schedule (who goes in
# which batch), the length sorting (tie-breaks and pool re-cuts), and the authors' per-epoch shuffles.
_PERMUTATION, _SCHEDULE, _POOL, _AUTHORS_SHUFFLE = 1, 2, 3, 4
# MultiTaskSampler's settings, which a saved state must match
_SETTINGS = ("tasks", "sizes", "batch_size", "schedule", "seed", "epoch_examples", "length_pool", "protocol", "anchor")


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))


def _normalise(raw: dict[str, float]) -> dict[str, float]:
    total = sum(raw.values())
    return {t: float(v) / total for t, v in raw.items()}


def _scores(kind: str, name: str, scores: dict[str, float] | None, tasks: list[str], hint: str) -> dict[str, float]:
    missing = [t for t in tasks if scores is None or t not in scores]
    if missing:
        raise ValueError(f"sampler {kind!r} needs {name} scores for every task; "
                         f"missing for: {', '.join(missing)} ({hint})")
    return {t: float(scores[t]) for t in tasks}


def task_weights(kind: str, sizes: dict[str, int], *, temperature: float = 2.0,
                 reference: dict[str, float] | None = None, current: dict[str, float] | None = None,
                 floor: float = 0.5) -> dict[str, float]:
    """Sampling probability of each task of `sizes` (task -> training examples), in its order; they sum to 1.
    Scores are headline scores x100. `dynamic`: Gottumukkala et al. (ACL 2020), the gap floored; `dynamic-softmax`:
    the authors' multi_dataloader.py `get_dynamic_sampling_distribution`. Until `current` is known: by size."""
    tasks = list(sizes)
    if not tasks:
        raise ValueError("task_weights: no tasks given (sizes is empty)")
    if kind not in SAMPLERS:
        raise ValueError(f"unknown sampler {kind!r}; choose one of: {', '.join(SAMPLERS)}")
    if kind == "temperature" and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if kind in ("uniform", "size", "temperature"):  # size ** (1 / T): T = 1 is `size`, T -> inf `uniform`
        power = 1.0 / temperature if kind == "temperature" else float(kind == "size")
        return _normalise({t: float(sizes[t]) ** power for t in tasks})

    if kind == "dynamic" and not floor > 0:
        raise ValueError(f"dynamic sampling floor must be > 0 points, got {floor}")
    ref = _scores(kind, "reference", reference, tasks, "the mean best dev score x100 of its single-task runs")
    if len(tasks) > 1 and max(abs(v) for v in ref.values()) <= 1.0:
        raise ValueError(f"reference scores {ref} look like fractions; give headline scores x100 (0-100)")
    if current is None:
        return _normalise({t: float(sizes[t]) for t in tasks})
    cur = _scores(kind, "current", current, tasks, "the multi-task model's latest dev score x100")
    if kind == "dynamic":
        return _normalise({t: max(ref[t] - cur[t], floor) for t in tasks})
    gaps = np.array([(ref[t] - cur[t]) / 100.0 for t in tasks])
    e = np.exp(gaps - gaps.max())  # softmax is shift-invariant: subtracting the max only avoids overflow
    return _normalise(dict(zip(tasks, e.tolist())))


def authors_quotas(weights: list[float], batch_size: int, uniform: bool | None = None) -> list[int]:
    """Rows of each task in one group of the authors' epoch (`instances_per_batch`), as multi_dataloader.py
    `MTLDataset.get_instances_numbers_from_proportions` computes them, quirks included (docs/PROTOCOL.md,
    rule 1). uniform: whether the sampler is `uniform`, whose quotas they leave uncorrected; None: all equal."""
    w = [float(x) for x in weights]
    T, B = len(w), int(batch_size)
    if T == 0 or not np.isclose(sum(w), 1.0):
        raise ValueError(f"authors_quotas: weights must sum to 1, got {w} (sum {sum(w)})")
    if B < T:
        raise ValueError(f"authors_quotas: batch_size {B} is smaller than the {T} tasks (their code refuses it too)")
    if B == T:
        return [1] * T
    uniform = len(set(w)) == 1 if uniform is None else uniform
    q = [int(round(x * B)) for x in w]  # Python's round: half to even
    if not uniform:  # they correct the sum at the argmax/argmin of int(math.modf(w_t * B)[0]), always 0: task 0
        q[0] += B - sum(q)
    while 0 in q:  # a zero quota takes one row from the first largest
        zero, largest = q.index(0), q.index(max(q))
        q[largest], q[zero] = q[largest] - 1, q[zero] + 1
    if min(q) < 0:
        raise ValueError(f"authors_quotas: weights {w} give the first task a negative quota {q} "
                         f"(their code fails on this too); give every task a larger weight")
    return q


def apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """`total` split into counts (T,) proportional to `weights` (T,): largest remainder, ties to the earlier task."""
    exact = total * np.asarray(weights, dtype=np.float64) / np.sum(weights)
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(-(exact - counts), kind="stable")[:total - int(counts.sum())]] += 1
    return counts


def shard(task_ids: np.ndarray, example_ids: np.ndarray, rank: int, world_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows rank, rank + world_size, ... of a global batch: every rank gets short and long rows, sorted by length."""
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
        raise ValueError(f"shard: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return task_ids[rank::world_size], example_ids[rank::world_size]


def _cut(rows: int, batch_size: int) -> np.ndarray:
    """Batch sizes (S,) that cut `rows` rows in order: full batches, then the remainder."""
    full, rest = divmod(rows, batch_size)
    return np.array([batch_size] * full + [rest] * (rest > 0), dtype=np.int64)


def _is_count(x, least: int) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= least


class MultiTaskSampler:
    """The batches of every epoch of a (multi-)task run (docs/PROTOCOL.md, rules 1 and 2).

    sizes: task -> training examples, a task's id its position. lengths: task -> (sizes[task],) token counts, to sort
    each batch's rows by length (a micro-batch then pads only to its own longest row); `length_pool` k > 1 sorts
    across k batches. anchor: (tl) the task one pass over which is an epoch; None: `epoch_examples` rows (all).
    """

    def __init__(self, sizes: dict[str, int], lengths: dict[str, np.ndarray] | None = None,
                 batch_size: int = 128, schedule: str = "heterogeneous", seed: int = 0,
                 length_pool: int = 1, protocol: str = "tl", anchor: str | None = None, *,
                 epoch_examples: int | None = None):
        if not sizes:
            raise ValueError("MultiTaskSampler: no tasks given (sizes is empty)")
        bad = [f"{t}={n}" for t, n in sizes.items() if not _is_count(n, 1)]
        if bad:
            raise ValueError(f"MultiTaskSampler: task sizes must be integers >= 1, got {', '.join(bad)}")
        for name, value, least in (("batch_size", batch_size, 1), ("seed", seed, 0), ("length_pool", length_pool, 1)):
            if not _is_count(value, least):
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if epoch_examples is not None and not _is_count(epoch_examples, 1):
            raise ValueError(f"epoch_examples must be an integer >= 1 or None, got {epoch_examples!r}")
        for name, value, choices in (("schedule", schedule, SCHEDULES), ("protocol", protocol, PROTOCOLS)):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
        if anchor is not None and anchor not in sizes:
            raise ValueError(f"anchor {anchor!r} is not one of the tasks {list(sizes)}")
        if anchor is not None and epoch_examples is not None:
            raise ValueError("give either anchor (an epoch is one pass over it) or epoch_examples, not both")
        if protocol == "authors":
            for name, got, only in (("schedule", schedule, "heterogeneous"), ("length_pool", length_pool, 1),
                                    ("anchor", anchor, None), ("epoch_examples", epoch_examples, None)):
                if got != only:
                    raise ValueError(f"protocol 'authors' reproduces their heterogeneous epochs: "
                                     f"it needs {name}={only!r}, got {name}={got!r}")
            if batch_size < len(sizes):
                raise ValueError(f"protocol 'authors': batch_size {batch_size} is smaller than the {len(sizes)} tasks")
        if length_pool > 1 and lengths is None:
            raise ValueError(f"length_pool={length_pool} needs the examples' lengths (lengths=None)")
        for t in sizes if lengths is not None else ():
            got = len(lengths[t]) if t in lengths else "none"
            if got != sizes[t]:
                raise ValueError(f"lengths[{t!r}] must hold {sizes[t]} entries (one per example), got {got}")

        self.tasks, self.sizes = list(sizes), {t: int(n) for t, n in sizes.items()}
        # one flat array of lengths (sum of sizes,): task i's examples from _first[i] on
        self.lengths = None if lengths is None else np.concatenate([lengths[t] for t in self.tasks]).astype(np.int64)
        self._first = np.cumsum([0] + list(self.sizes.values()))[:-1]  # (T,)
        self.batch_size, self.seed, self.length_pool = int(batch_size), int(seed), int(length_pool)
        self.schedule, self.protocol, self.anchor = schedule, protocol, anchor
        self.epoch_examples = int(epoch_examples) if epoch_examples is not None else sum(self.sizes.values())
        # the state: everything epoch_batches reads besides the settings above
        self.epoch, self.weights, self.uniform = 0, task_weights("size", self.sizes), None
        self.cursor, self.passes = dict.fromkeys(self.tasks, 0), dict.fromkeys(self.tasks, 0)

    def set_weights(self, weights: dict[str, float], uniform: bool | None = None) -> None:
        """Set the task weights for the next epoch(s), normalised; `uniform`: see `authors_quotas`."""
        if set(weights) != set(self.tasks):
            raise ValueError(f"set_weights: need a weight for exactly the tasks {self.tasks}, got {sorted(weights)}")
        w = {t: float(weights[t]) for t in self.tasks}
        if not all(math.isfinite(v) and v >= 0 for v in w.values()) or sum(w.values()) <= 0:
            raise ValueError(f"set_weights: weights must be finite, >= 0 and not all 0, got {w}")
        if self.anchor is not None and w[self.anchor] <= 0:
            raise ValueError(f"set_weights: the anchor task {self.anchor!r} needs a weight > 0 "
                             f"(an epoch is one pass over it and the others are sized from its weight)")
        self.weights, self.uniform = _normalise(w), uniform

    def state_dict(self) -> dict:
        """A JSON-serialisable snapshot (settings, epoch, weights, cursors); saved at an epoch's start, resumes it."""
        return {**{key: getattr(self, key) for key in _SETTINGS}, "epoch": self.epoch, "weights": dict(self.weights),
                "uniform": self.uniform, "cursor": dict(self.cursor), "passes": dict(self.passes)}

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict()`; the settings must be those the state was saved with."""
        for key in _SETTINGS:  # a state saved before protocols existed: tl, no anchor
            got, value = state.get(key, "tl" if key == "protocol" else None), getattr(self, key)
            if got != value:
                raise ValueError(f"sampler state was saved with {key}={got!r} but this run has "
                                 f"{key}={value!r}; resume with the same settings")
        self.epoch = int(state["epoch"])
        self.set_weights(state["weights"], state.get("uniform"))
        self.cursor, self.passes = ({t: int(state[key][t]) for t in self.tasks} for key in ("cursor", "passes"))

    def authors_groups(self) -> tuple[list[int], int]:
        """(q, m): each task's rows per group, and the groups (`sample_from_all_instances` zips the tasks' groups)."""
        q = authors_quotas(list(self.weights.values()), self.batch_size, self.uniform)
        m = min(self.sizes[t] // q_t for t, q_t in zip(self.tasks, q))
        if m == 0:
            short = [f"{t} ({self.sizes[t]} < {q_t})" for t, q_t in zip(self.tasks, q) if self.sizes[t] < q_t]
            raise ValueError(f"authors protocol: a task has fewer examples than its quota per batch, so the epoch "
                             f"is empty: {', '.join(short)}")
        return q, m

    def anchor_rows(self) -> np.ndarray:
        """(T,) rows of each task in a tl epoch: n_anchor for the anchor, round-half-up(n_anchor w_t / w_anchor)."""
        n, w = self.sizes[self.anchor], self.weights[self.anchor]
        return np.array([n if t == self.anchor else math.floor(n * self.weights[t] / w + 0.5) for t in self.tasks],
                        dtype=np.int64)

    def _plan(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """The next epoch's rows per task (T,), task per batch (S,) (None: batches mix tasks), batch sizes (S,)."""
        w, T, B = list(self.weights.values()), len(self.tasks), self.batch_size
        if self.protocol == "authors":
            q, m = self.authors_groups()
            return np.array(q) * m, None, _cut(m * sum(q), B)
        rows = self.anchor_rows() if self.anchor is not None else apportion(self.epoch_examples, w)
        if self.schedule == "heterogeneous":
            return rows, None, _cut(int(rows.sum()), B)
        if self.anchor is None:
            sizes = _cut(self.epoch_examples, B)
            return rows, np.repeat(np.arange(T), apportion(len(sizes), w)), sizes
        per_task = [_cut(int(r), B) for r in rows]
        return rows, np.repeat(np.arange(T), [len(s) for s in per_task]), np.concatenate(per_task)

    def steps_in_epoch(self) -> int:
        """Batches the next `epoch_batches` call returns, for the current weights (nothing drawn)."""
        return len(self._plan()[2])

    def epoch_batches(self, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The `steps_in_epoch()` batches of `epoch` (from 0), each (task_ids (b,), example_ids (b,)) int64;
        advances to the next epoch. To regenerate an epoch, `load_state_dict` the state saved at its start."""
        if epoch != self.epoch:
            raise ValueError(f"epoch_batches({epoch}): the sampler is at epoch {self.epoch}; epochs come in order "
                             f"(load_state_dict the state saved at the start of epoch {epoch} to regenerate it)")
        rows, slot_task, sizes = self._plan()
        rng, T = _rng(_SCHEDULE, self.seed, epoch), len(self.tasks)
        if self.protocol == "authors":  # multi_dataloader.py: each task freshly shuffled (`random_generator`), its
            # first q_t * m rows kept (`sample_from_all_instances`), all shuffled (`group_instances_heterogeneous`)
            labels = np.repeat(np.arange(T), rows)
            examples = np.concatenate([_rng(_AUTHORS_SHUFFLE, self.seed, zlib.crc32(t.encode()), epoch)
                                       .permutation(self.sizes[t])[:r] for t, r in zip(self.tasks, rows)])
            order = rng.permutation(len(labels))
            labels, examples = labels[order], examples[order]
        else:
            if slot_task is None:  # heterogeneous: the epoch's task labels shuffled
                labels = rng.permutation(np.repeat(np.arange(T), rows))  # (N,)
            else:  # one task per batch, shuffled if homogeneous (without an anchor, the remainder batch stays last)
                order = rng.permutation(len(sizes)) if self.schedule == "homogeneous" else np.arange(len(sizes))
                slot_task, sizes = slot_task[order], sizes if self.anchor is None else sizes[order]
                labels = np.repeat(slot_task, sizes)  # (N,)
            examples = np.empty(len(labels), dtype=np.int64)
            for i, t in enumerate(self.tasks):
                examples[labels == i] = self._take(t, int(np.sum(labels == i)))
        bounds = np.cumsum(sizes)[:-1]
        batches = list(zip(np.split(labels, bounds), np.split(examples, bounds)))
        if self.lengths is not None:
            self._sort_by_length(batches, slot_task, sizes, _rng(_POOL, self.seed, epoch))
        self.epoch += 1
        return batches

    def _take(self, task: str, n: int) -> np.ndarray:
        """The next n example ids of the task's stream of permutations, pass p seeded by (seed, task, p). zlib.crc32,
        unlike hash(), is the same in every process; the name keeps the stream when other tasks are added."""
        out = []
        while n > 0:
            p, c = self.passes[task], self.cursor[task]
            perm = _rng(_PERMUTATION, self.seed, zlib.crc32(task.encode()), p).permutation(self.sizes[task])
            out.append(perm[c:c + n])
            n, self.cursor[task] = n - len(out[-1]), c + len(out[-1])
            if self.cursor[task] == len(perm):
                self.cursor[task], self.passes[task] = 0, p + 1
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def _sort_by_length(self, batches: list, slot_task, sizes: np.ndarray, rng: np.random.Generator) -> None:
        """In place: pool each length_pool consecutive batches (of one task, for single-task batches), sort their
        rows by length, cut them again into those batch sizes and deal the pieces out in random order."""
        k, T = self.length_pool, len(self.tasks)
        runs = [np.arange(len(sizes))] if slot_task is None else [np.flatnonzero(slot_task == i) for i in range(T)]
        for group in (slots[j:j + k] for slots in runs for j in range(0, len(slots), k)):
            tids, eids = (np.concatenate([batches[s][i] for s in group]) for i in (0, 1))
            order = np.lexsort((rng.random(len(tids)), self.lengths[self._first[tids] + eids]))  # random tie-break
            dealt = rng.permutation(group)
            for s, rows in zip(dealt, np.split(order, np.cumsum(sizes[dealt])[:-1])):
                batches[s] = (tids[rows], eids[rows])

