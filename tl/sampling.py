"""Multi-task sampling: how much of each task to train on, and in which batches.

Two parts, both pure numpy and deterministic from a seed:

1. `task_weights(kind, sizes, ...)` -> {task: probability}. Samplers:
   - `uniform`:         1 / number of tasks.
   - `size`:            proportional to the training-set size.
   - `temperature`:     proportional to size ** (1 / T); T = 1 is `size`, T -> inf is `uniform`.
   - `dynamic`:         Gottumukkala et al., ACL 2020, "Dynamic Sampling Strategies for Multi-Task
                        Reading Comprehension": proportional to the gap between the task's
                        single-task dev score and the multi-task model's current dev score,
                        recomputed every epoch; the first epoch (no current scores yet) by size. The
                        gap is clipped below at `floor` so that a task the model already matches
                        keeps being trained on (no task starves).
   - `dynamic-softmax`: the variant in Weller et al.'s released code (orionw/MTLvsIFT):
                        softmax(reference - current) with scores on a 0-1 scale. Since gaps are at
                        most a few tenths, this is close to uniform (see ../shared/paper/PROTOCOL.md).
   Scores, for both dynamic samplers, are headline scores x100 (0-100, the numbers of the paper's
   matrices); `dynamic-softmax` divides them by 100 itself.

2. `MultiTaskSampler`: the list of global batches of each epoch, each batch two int64 arrays
   `(task_ids, example_ids)`. Schedules (the paper's terms, PROTOCOL.md):
   - `heterogeneous`: tasks mixed inside each batch (the paper's choice);
   - `homogeneous`:   every batch from one task, batch order shuffled;
   - `partitioned`:   task by task, all of task 0's batches, then task 1's, ...

Definitions that the training loop relies on:
- Epoch length. An epoch is `epoch_examples` rows, by default the sum of the tasks' training sizes:
  one epoch processes as many examples as one pass over all the data would, whatever the weights.
  So `steps_per_epoch = ceil(epoch_examples / batch_size)` is fixed for the whole run and the
  learning-rate schedule can be computed before training (the authors' code let an "epoch" change
  length when the weights changed). Every batch holds `batch_size` rows except the epoch's last
  one, which holds the remainder: an epoch is then exactly `epoch_examples` rows, and a single task
  with the default length sees each example exactly once per epoch, as a plain data loader would.
  The loss is normalised by the rows of each optimizer step, so a smaller last step is fine.
- Quotas, not coin flips. A task's share of an epoch is exact: the epoch's rows (heterogeneous) or
  batches (homogeneous, partitioned) are split between tasks by the weights with largest-remainder
  rounding, then shuffled. Each heterogeneous batch is thus a draw without replacement from the
  epoch's task labels (multivariate hypergeometric, mean batch_size * weight, close to a multinomial
  when the epoch is much longer than a batch), and with `size` weights every example of every task
  is seen exactly once per epoch. In homogeneous and partitioned schedules the remainder batch
  belongs to one task, so that task gets batch_size - remainder fewer rows than its quota.
- Without replacement. Each task reads its examples from a stream of permutations: pass p of
  task t is a permutation seeded by (seed, t's name, p); a cursor and the pass number carry over
  epoch boundaries, so no example of a task repeats before all of its examples were drawn.
- Padding. With `lengths` (tokens per example) the rows of each batch are sorted by length, so a
  micro-batch (a contiguous slice) pads only to its own longest row and the batch's mixture is
  kept exactly. With `length_pool = k > 1` the rows of k consecutive batches (of the same task, in
  homogeneous and partitioned schedules) are pooled, sorted by length (random tie-break), cut into
  batches again and those batches shuffled: whole batches then pad far less, the mixture is exact
  over the pool only, and since tasks differ in length (CoLA ~11 tokens, RTE ~67) a heterogeneous
  batch leans towards tasks of similar length. k = 1 is the faithful setting; raise k for speed.
- Resuming. `state_dict()` (JSON-serialisable) holds the epoch, the weights and each task's cursor
  and pass; `epoch_batches(epoch)` depends on nothing else. Save the state as of the start of the
  epoch with the step within it; on resume `load_state_dict`, call `epoch_batches(epoch)` and skip
  the steps already done:
      state = sampler.state_dict(); batches = sampler.epoch_batches(epoch)   # save `state` + step
- Distributed. `shard(task_ids, example_ids, rank, world_size)` gives rank r the rows r, r + W, ...
  of the global batch: each rank's rows stay sorted by length (its micro-batches keep the padding
  benefit) and all ranks get a similar mix of lengths (no straggler rank holding all long rows).

Notation: T tasks, N = epoch_examples, B = batch_size, S = steps_per_epoch.
"""
from __future__ import annotations

import math
import zlib

import numpy as np

SAMPLERS = ("uniform", "size", "temperature", "dynamic", "dynamic-softmax")
SCHEDULES = ("heterogeneous", "homogeneous", "partitioned")

# Seed-sequence tags keep the three random streams apart: example permutations, the schedule (who
# goes in which batch), and the length sorting (tie-breaks and pool re-cuts).
_PERMUTATION, _SCHEDULE, _POOL = 1, 2, 3


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))


def _normalise(raw: dict[str, float]) -> dict[str, float]:
    total = sum(raw.values())
    return {t: float(v) / total for t, v in raw.items()}


def _scores(kind: str, name: str, scores: dict[str, float] | None, tasks: list[str], hint: str) -> dict[str, float]:
    missing = [t for t in tasks if scores is None or t not in scores]
    if missing:
        raise ValueError(f"sampler {kind!r} needs {name} scores for every task; missing for: {', '.join(missing)} ({hint})")
    return {t: float(scores[t]) for t in tasks}


def task_weights(kind: str, sizes: dict[str, int], *, temperature: float = 2.0,
                 reference: dict[str, float] | None = None, current: dict[str, float] | None = None,
                 floor: float = 0.5) -> dict[str, float]:
    """Sampling probability of each task, in the order of `sizes`; they sum to 1.

    sizes: task -> number of training examples (after any subsampling).
    temperature: T of the `temperature` sampler, > 0.
    reference: task -> single-task dev score x100 (0-100), required by both dynamic samplers.
    current: task -> the multi-task model's latest dev score x100; None before the first evaluation,
        in which case both dynamic samplers weight by size (Gottumukkala et al. 2020).
    floor: the smallest gap, in points on the 0-100 scale, that `dynamic` gives a task (> 0).
    """
    tasks = list(sizes)
    if not tasks:
        raise ValueError("task_weights: no tasks given (sizes is empty)")
    if kind not in SAMPLERS:
        raise ValueError(f"unknown sampler {kind!r}; choose one of: {', '.join(SAMPLERS)}")
    if kind == "uniform":
        return _normalise({t: 1.0 for t in tasks})
    if kind == "size":
        return _normalise({t: float(sizes[t]) for t in tasks})
    if kind == "temperature":
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        return _normalise({t: float(sizes[t]) ** (1.0 / temperature) for t in tasks})

    if kind == "dynamic" and not floor > 0:
        raise ValueError(f"dynamic sampling floor must be > 0 points, got {floor}")
    ref = _scores(kind, "reference", reference, tasks, "the mean best dev score x100 of its single-task runs")
    if len(tasks) > 1 and max(abs(v) for v in ref.values()) <= 1.0:
        raise ValueError(f"reference scores {ref} look like fractions; give headline scores x100 (0-100)")
    if current is None:  # first epoch: nothing measured yet
        return _normalise({t: float(sizes[t]) for t in tasks})
    cur = _scores(kind, "current", current, tasks, "the multi-task model's latest dev score x100")
    if kind == "dynamic":
        return _normalise({t: max(ref[t] - cur[t], floor) for t in tasks})
    # dynamic-softmax, on the 0-1 scale of the authors' code; subtracting the max gap is only for
    # numerical safety (softmax is shift-invariant).
    gaps = np.array([(ref[t] - cur[t]) / 100.0 for t in tasks])
    e = np.exp(gaps - gaps.max())
    return _normalise(dict(zip(tasks, e.tolist())))


def apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Split `total` into integer counts proportional to `weights` (T,), summing exactly to `total`.

    Largest-remainder (Hamilton) rounding; ties go to the earlier task.
    """
    exact = total * np.asarray(weights, dtype=np.float64) / np.sum(weights)
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


def shard(task_ids: np.ndarray, example_ids: np.ndarray, rank: int, world_size: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """This rank's rows of a global batch: rows rank, rank + world_size, ... (strided).

    The union over ranks 0..world_size-1 is the global batch; rank sizes differ by at most one
    (a rank may get none when world_size > batch rows). Strided rather than contiguous so that every
    rank gets short and long rows alike while its own rows stay sorted by length.
    """
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
        raise ValueError(f"shard: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return task_ids[rank::world_size], example_ids[rank::world_size]


class MultiTaskSampler:
    """The batches of every epoch of a (multi-)task run; see the module docstring for definitions.

    sizes: task -> training examples, in task-id order (task id = position in this dict).
    lengths: task -> (sizes[task],) token counts, to sort rows by length; None for no sorting.
    batch_size: rows of a global batch (B). schedule: one of SCHEDULES. seed: int >= 0.
    epoch_examples: rows per epoch (N); default sum(sizes.values()).
    length_pool: batches pooled before sorting by length (k); 1 sorts inside each batch only.
    The weights start proportional to size; `set_weights` changes them.
    """

    def __init__(self, sizes: dict[str, int], lengths: dict[str, np.ndarray] | None = None,
                 batch_size: int = 128, schedule: str = "heterogeneous", seed: int = 0,
                 epoch_examples: int | None = None, length_pool: int = 1):
        if not sizes:
            raise ValueError("MultiTaskSampler: no tasks given (sizes is empty)")
        bad = [f"{t}={n}" for t, n in sizes.items() if not (isinstance(n, (int, np.integer)) and n >= 1)]
        if bad:
            raise ValueError(f"MultiTaskSampler: task sizes must be integers >= 1, got {', '.join(bad)}")
        if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        if not (isinstance(seed, (int, np.integer)) and seed >= 0):
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        if epoch_examples is not None and not (isinstance(epoch_examples, (int, np.integer)) and epoch_examples >= 1):
            raise ValueError(f"epoch_examples must be an integer >= 1 or None, got {epoch_examples!r}")
        if not (isinstance(length_pool, (int, np.integer)) and length_pool >= 1):
            raise ValueError(f"length_pool must be an integer >= 1, got {length_pool!r}")
        if length_pool > 1 and lengths is None:
            raise ValueError(f"length_pool={length_pool} needs the examples' lengths (lengths=None)")
        self.tasks = list(sizes)
        self.sizes = {t: int(n) for t, n in sizes.items()}
        self.lengths = None
        if lengths is not None:
            self.lengths = {}
            for t in self.tasks:
                if t not in lengths or len(lengths[t]) != self.sizes[t]:
                    got = "none" if t not in lengths else len(lengths[t])
                    raise ValueError(f"lengths[{t!r}] must hold {self.sizes[t]} entries (one per example), got {got}")
                self.lengths[t] = np.asarray(lengths[t])
        self.batch_size = int(batch_size)
        self.schedule = schedule
        self.seed = int(seed)
        self.epoch_examples = int(epoch_examples) if epoch_examples is not None else sum(self.sizes.values())
        self.length_pool = int(length_pool)
        self.steps_per_epoch = math.ceil(self.epoch_examples / self.batch_size)
        # The state: everything epoch_batches reads besides the settings above.
        self.epoch = 0
        self.weights = task_weights("size", self.sizes)
        self.cursor = {t: 0 for t in self.tasks}
        self.passes = {t: 0 for t in self.tasks}
        self._perm_cache: dict[str, tuple[int, np.ndarray]] = {}

    # -- state --------------------------------------------------------------------------------
    def set_weights(self, weights: dict[str, float]) -> None:
        """Set the task weights for the next epoch(s); normalised to sum to 1."""
        if set(weights) != set(self.tasks):
            raise ValueError(f"set_weights: need a weight for exactly the tasks {self.tasks}, got {sorted(weights)}")
        w = {t: float(weights[t]) for t in self.tasks}
        if not all(math.isfinite(v) and v >= 0 for v in w.values()) or sum(w.values()) <= 0:
            raise ValueError(f"set_weights: weights must be finite, >= 0 and not all 0, got {w}")
        self.weights = _normalise(w)

    def _settings(self) -> dict:
        return {"tasks": self.tasks, "sizes": self.sizes, "batch_size": self.batch_size,
                "schedule": self.schedule, "seed": self.seed, "epoch_examples": self.epoch_examples,
                "length_pool": self.length_pool}

    def state_dict(self) -> dict:
        """A JSON-serialisable snapshot: the settings (checked on load) and the state."""
        return {**self._settings(), "epoch": self.epoch, "weights": dict(self.weights),
                "cursor": dict(self.cursor), "passes": dict(self.passes)}

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict()`; the settings must be those the state was saved with."""
        for key, value in self._settings().items():
            if state.get(key) != value:
                raise ValueError(f"sampler state was saved with {key}={state.get(key)!r} but this run has "
                                 f"{key}={value!r}; resume with the same settings")
        self.epoch = int(state["epoch"])
        self.set_weights(state["weights"])
        self.cursor = {t: int(state["cursor"][t]) for t in self.tasks}
        self.passes = {t: int(state["passes"][t]) for t in self.tasks}

    # -- drawing examples ---------------------------------------------------------------------
    def _permutation(self, task: str) -> np.ndarray:
        cached = self._perm_cache.get(task)
        if cached is None or cached[0] != self.passes[task]:
            # zlib.crc32, unlike hash(), is the same in every process; the task's name rather than its
            # id keeps a task's stream unchanged when other tasks are added to the run.
            rng = _rng(_PERMUTATION, self.seed, zlib.crc32(task.encode()), self.passes[task])
            cached = (self.passes[task], rng.permutation(self.sizes[task]))
            self._perm_cache[task] = cached
        return cached[1]

    def _take(self, task: str, n: int) -> np.ndarray:
        """The next n example ids of the task's permutation stream (crossing passes as needed)."""
        out = []
        while n > 0:
            perm, c = self._permutation(task), self.cursor[task]
            m = min(n, len(perm) - c)
            out.append(perm[c:c + m])
            n -= m
            self.cursor[task] = c + m
            if self.cursor[task] == len(perm):
                self.cursor[task], self.passes[task] = 0, self.passes[task] + 1
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    # -- the epoch ----------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The S batches of `epoch` (counted from 0), each (task_ids (b,), example_ids (b,)) int64.

        Advances the state to the next epoch. Epochs must come in order; to regenerate an epoch,
        `load_state_dict` the state saved at its start.
        """
        if epoch != self.epoch:
            raise ValueError(f"epoch_batches({epoch}): the sampler is at epoch {self.epoch}; epochs come in order "
                             f"(load_state_dict the state saved at the start of epoch {epoch} to regenerate it)")
        B, N, S, T = self.batch_size, self.epoch_examples, self.steps_per_epoch, len(self.tasks)
        rng = _rng(_SCHEDULE, self.seed, epoch)
        w = np.array([self.weights[t] for t in self.tasks])
        sizes = np.full(S, B, dtype=np.int64)
        sizes[-1] = N - (S - 1) * B                                    # the remainder batch, last
        bounds = np.cumsum(sizes)[:-1]

        if self.schedule == "heterogeneous":
            labels = rng.permutation(np.repeat(np.arange(T), apportion(N, w)))   # (N,) task per row
            examples = np.empty(N, dtype=np.int64)
            for i, t in enumerate(self.tasks):
                rows = labels == i
                examples[rows] = self._take(t, int(rows.sum()))
            batches = list(zip(np.split(labels, bounds), np.split(examples, bounds)))
            groups = [np.arange(s, min(s + self.length_pool, S)) for s in range(0, S, self.length_pool)]
        else:
            slot_task = np.repeat(np.arange(T), apportion(S, w))     # (S,) task of each batch
            if self.schedule == "homogeneous":
                slot_task = rng.permutation(slot_task)
            batches = [None] * S
            groups = []
            for i, t in enumerate(self.tasks):
                slots = np.flatnonzero(slot_task == i)
                ids = np.split(self._take(t, int(sizes[slots].sum())), np.cumsum(sizes[slots])[:-1])
                for s, e in zip(slots, ids):
                    batches[s] = (np.full(len(e), i, dtype=np.int64), e)
                groups += [slots[j:j + self.length_pool] for j in range(0, len(slots), self.length_pool)]

        if self.lengths is not None:
            self._sort_by_length(batches, groups, sizes, _rng(_POOL, self.seed, epoch))
        self.epoch += 1
        return batches

    def _sort_by_length(self, batches: list, groups: list[np.ndarray], sizes: np.ndarray,
                        rng: np.random.Generator) -> None:
        """In place: pool each group's rows, sort by length, cut again into the group's batch sizes
        and hand the pieces to the group's batches in random order (a group of one batch: sort it)."""
        for group in groups:
            tids = np.concatenate([batches[s][0] for s in group])
            eids = np.concatenate([batches[s][1] for s in group])
            lens = np.empty(len(tids), dtype=np.int64)
            for i, t in enumerate(self.tasks):
                rows = tids == i
                lens[rows] = self.lengths[t][eids[rows]]
            order = np.lexsort((rng.random(len(lens)), lens))          # by length, random tie-break
            start = 0
            for s in rng.permutation(group):
                rows = order[start:start + sizes[s]]
                batches[s] = (tids[rows], eids[rows])
                start += sizes[s]
