"""Multi-task sampling: how much of each task to train on, and in which batches, under two protocols.

Self-contained: imports only numpy and the standard library, nothing from tl, so this file can be
copied alone into other code. Everything is deterministic from a seed. docs/PROTOCOL.md puts the two
protocols side by side, rule by rule, with the rows each task gets over whole runs.

1. `task_weights(kind, sizes, ...)` -> {task: probability}. Samplers:
   - `uniform`:         1 / number of tasks.
   - `size`:            proportional to the training-set size.
   - `temperature`:     proportional to size ** (1 / T); T = 1 is `size`, T -> inf is `uniform`.
   - `dynamic`:         Gottumukkala et al., ACL 2020, "Dynamic Sampling Strategies for Multi-Task
                        Reading Comprehension": proportional to the gap between the task's
                        single-task dev score and the multi-task model's current one, recomputed
                        every epoch, the first epoch by size; the gap is clipped below at `floor`,
                        so that a task the model already matches is still trained on.
   - `dynamic-softmax`: Weller et al.'s released code (orionw/MTLvsIFT, multi_dataloader.py,
                        `MTLDataset.get_dynamic_sampling_distribution`): softmax(reference - current)
                        on a 0-1 scale; gaps of a few tenths make it close to uniform.
   Scores are headline scores x100 (0-100, the paper's matrices); `dynamic-softmax` divides by 100.
2. `authors_quotas(weights, batch_size)`: the authors' rows of each task per batch, quirks included.
3. `MultiTaskSampler`: the global batches of each epoch, each two int64 arrays (task_ids, example_ids),
   under a schedule: `heterogeneous` (batches mix tasks), `homogeneous` (every batch from one task,
   batches shuffled) or `partitioned` (every batch from one task, the tasks one after the other).

protocol="tl" (the default; fair epochs):
- Epoch. `anchor=None`: `epoch_examples` rows, by default the sum of the sizes (one pass over all
  the data whatever the weights; MTL-ALL and single-task runs). `anchor=<task>` (a pairwise run's
  target): one pass over the anchor, which gets n_anchor rows; every other task s gets
  round_half_up(n_anchor * w_s / w_anchor) rows, so the epoch's length follows the weights.
- Quotas, not coin flips. Without an anchor the epoch's rows (heterogeneous) or batches (homogeneous,
  partitioned) are split by the weights with largest-remainder rounding (`apportion`), then
  shuffled: a heterogeneous batch is a draw without replacement from the epoch's task labels, and
  with `size` weights every example of every task is seen exactly once per epoch.
- Remainders. Batches hold `batch_size` rows except the epoch's last (heterogeneous) or each task's
  last (homogeneous, partitioned with an anchor); without an anchor the homogeneous or partitioned
  remainder batch belongs to one task, which gets batch_size - remainder rows fewer than its quota.
- Without replacement. Task t reads its examples from a stream of permutations, pass p seeded by
  (seed, t's name, p); its cursor carries over epochs, so no example repeats before all were drawn.

protocol="authors" (orionw/MTLvsIFT, multi_dataloader.py `MTLDataset` + `MTLRandomSampler`, as
run_glue.py `train` runs them; heterogeneous only): at every epoch q_t = `authors_quotas` of the
current weights; each task freshly shuffled and cut into floor(n_t / q_t) groups of q_t; the tasks'
groups zipped, which keeps m = min_t floor(n_t / q_t) groups (the first q_t * m rows of each
shuffle); all those rows shuffled together and cut into batches of batch_size, the last partial
batch kept. The epoch's length thus changes with the weights; their learning-rate schedule's
length came from the first epoch: call `steps_in_epoch()` before it.

Both protocols:
- `steps_in_epoch()`: the batches the next `epoch_batches` call returns, computed without drawing.
- Padding. With `lengths` (tokens per example) each batch's rows are sorted by length, so a
  micro-batch (a contiguous slice) pads only to its own longest row and the mixture is kept. With
  `length_pool = k > 1` (tl only) k consecutive batches (of one task, for single-task batches) are
  pooled, sorted by length, cut again and shuffled: far less padding, the mixture exact over the
  pool only, and since tasks differ in length (CoLA ~11 tokens, RTE ~67) a heterogeneous batch
  leans towards tasks of similar length. k = 1 is the faithful setting.
- Resuming. `state_dict()` (JSON-serialisable) holds the settings, the epoch, the weights and each
  task's cursor and pass. Save it at the start of an epoch with the step within it; on resume
  `load_state_dict`, call `epoch_batches(epoch)` and skip the steps already done.
- Distributed. `shard(task_ids, example_ids, rank, world_size)` gives rank r the rows r, r + W, ...
  of a global batch: each rank's rows stay sorted by length, and all ranks get a similar mix.

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


def authors_quotas(weights: list[float], batch_size: int, uniform: bool | None = None) -> list[int]:
    """Rows of each task in one group of the authors' epoch (their `instances_per_batch`).

    Step by step as orionw/MTLvsIFT, multi_dataloader.py,
    `MTLDataset.get_instances_numbers_from_proportions`, quirks included:
    - the weights must sum to 1 (np.isclose) and batch_size >= T; batch_size == T gives 1 each;
    - q_t = round(w_t * B), Python's round (half to even);
    - unless the sampler is uniform, the sum is then brought to B one row at a time, at the task with
      the largest (shortfall) or smallest (excess) fractional part; but that part is computed as
      int(math.modf(w_t * B)[0]), always 0, so argmax/argmin pick task 0: the whole shortfall or
      excess lands on the first task;
    - uniform quotas are not corrected: 3 tasks -> 43 each (129 rows), 9 tasks -> 14 each (126);
    - last, while some quota is 0, it takes one row from the first largest quota.
    uniform: whether the sampler is `uniform` (their `sampling_type == "uniform"`); None: inferred,
        true when all weights are equal.
    """
    w = [float(x) for x in weights]
    T, B = len(w), int(batch_size)
    if T == 0 or not np.isclose(sum(w), 1.0):
        raise ValueError(f"authors_quotas: weights must sum to 1, got {w} (sum {sum(w)})")
    if B < T:
        raise ValueError(f"authors_quotas: batch_size {B} is smaller than the {T} tasks (their code refuses it too)")
    if B == T:
        return [1] * T
    if uniform is None:
        uniform = len(set(w)) == 1
    q = [int(round(x * B)) for x in w]
    if not uniform:
        # their fractional parts are all 0, so np.argmax / np.argmin of them is always task 0
        q[0] += B - sum(q)
    while 0 in q:
        zero, largest = q.index(0), q.index(max(q))
        q[largest], q[zero] = q[largest] - 1, q[zero] + 1
    if min(q) < 0:
        raise ValueError(f"authors_quotas: weights {w} give the first task a negative quota {q} "
                         f"(their code fails on this too); give every task a larger weight")
    return q


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


def _cut(rows: int, batch_size: int) -> np.ndarray:
    """Batch sizes that cut `rows` rows in order: full batches, then the remainder (S,)."""
    sizes = np.full(math.ceil(rows / batch_size), batch_size, dtype=np.int64)
    if len(sizes):
        sizes[-1] = rows - (len(sizes) - 1) * batch_size
    return sizes


def _is_count(x, least: int) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= least


class MultiTaskSampler:
    """The batches of every epoch of a (multi-)task run; see the module docstring for definitions.

    sizes: task -> training examples, in task-id order (task id = position in this dict).
    lengths: task -> (sizes[task],) token counts, to sort rows by length; None for no sorting.
    batch_size: rows of a global batch (B). schedule: one of SCHEDULES. seed: int >= 0.
    length_pool: batches pooled before sorting by length (k); 1 sorts inside each batch only.
    protocol: "tl" (fair epochs) or "authors" (their code's epochs; heterogeneous, length_pool 1).
    anchor: (tl only) the task one pass over which makes an epoch (a pairwise run's target);
        None: an epoch is `epoch_examples` rows.
    epoch_examples: (tl, no anchor) rows per epoch; default sum(sizes.values()).
    The weights start proportional to size; `set_weights` changes them.
    """

    def __init__(self, sizes: dict[str, int], lengths: dict[str, np.ndarray] | None = None,
                 batch_size: int = 128, schedule: str = "heterogeneous", seed: int = 0,
                 length_pool: int = 1, protocol: str = "tl", anchor: str | None = None, *,
                 epoch_examples: int | None = None):
        _check_settings(sizes, batch_size, schedule, seed, length_pool, protocol, anchor, epoch_examples)
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
        self.protocol = protocol
        self.anchor = anchor
        self.epoch_examples = int(epoch_examples) if epoch_examples is not None else sum(self.sizes.values())
        self.length_pool = int(length_pool)
        # The state: everything epoch_batches reads besides the settings above.
        self.epoch = 0
        self.weights = task_weights("size", self.sizes)
        self.uniform: bool | None = None
        self.cursor = {t: 0 for t in self.tasks}
        self.passes = {t: 0 for t in self.tasks}
        self._perm_cache: dict[str, tuple[int, np.ndarray]] = {}

    # -- state --------------------------------------------------------------------------------
    def set_weights(self, weights: dict[str, float], uniform: bool | None = None) -> None:
        """Set the task weights for the next epoch(s); normalised to sum to 1.

        uniform: (authors only) whether they come from the `uniform` sampler, which their quota rule
            leaves uncorrected (`authors_quotas`); None: true when all weights are equal.
        """
        if set(weights) != set(self.tasks):
            raise ValueError(f"set_weights: need a weight for exactly the tasks {self.tasks}, got {sorted(weights)}")
        w = {t: float(weights[t]) for t in self.tasks}
        if not all(math.isfinite(v) and v >= 0 for v in w.values()) or sum(w.values()) <= 0:
            raise ValueError(f"set_weights: weights must be finite, >= 0 and not all 0, got {w}")
        if self.anchor is not None and w[self.anchor] <= 0:
            raise ValueError(f"set_weights: the anchor task {self.anchor!r} needs a weight > 0 "
                             f"(an epoch is one pass over it and the others are sized from its weight)")
        self.weights = _normalise(w)
        self.uniform = uniform

    def _settings(self) -> dict:
        return {"tasks": self.tasks, "sizes": self.sizes, "batch_size": self.batch_size,
                "schedule": self.schedule, "seed": self.seed, "epoch_examples": self.epoch_examples,
                "length_pool": self.length_pool, "protocol": self.protocol, "anchor": self.anchor}

    def state_dict(self) -> dict:
        """A JSON-serialisable snapshot: the settings (checked on load) and the state."""
        return {**self._settings(), "epoch": self.epoch, "weights": dict(self.weights), "uniform": self.uniform,
                "cursor": dict(self.cursor), "passes": dict(self.passes)}

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict()`; the settings must be those the state was saved with."""
        for key, value in self._settings().items():
            got = state.get(key, "tl" if key == "protocol" else None)   # saved before protocols: tl, no anchor
            if got != value:
                raise ValueError(f"sampler state was saved with {key}={got!r} but this run has "
                                 f"{key}={value!r}; resume with the same settings")
        self.epoch = int(state["epoch"])
        self.set_weights(state["weights"], state.get("uniform"))
        self.cursor = {t: int(state["cursor"][t]) for t in self.tasks}
        self.passes = {t: int(state["passes"][t]) for t in self.tasks}

    # -- epoch sizes, without drawing ----------------------------------------------------------
    def authors_groups(self) -> tuple[list[int], int]:
        """(q, m) for the current weights: each task's rows per group and the number of groups
        (multi_dataloader.py `sample_from_all_instances`: zip keeps the shortest task's groups)."""
        q = authors_quotas([self.weights[t] for t in self.tasks], self.batch_size, self.uniform)
        m = min(self.sizes[t] // q_t for t, q_t in zip(self.tasks, q))
        if m == 0:
            short = [f"{t} ({self.sizes[t]} < {q_t})" for t, q_t in zip(self.tasks, q) if self.sizes[t] < q_t]
            raise ValueError(f"authors protocol: a task has fewer examples than its quota per batch, so the epoch "
                             f"is empty: {', '.join(short)}")
        return q, m

    def anchor_rows(self) -> np.ndarray:
        """(T,) rows of each task in a tl epoch anchored on `anchor`: n_anchor for the anchor,
        round-half-up(n_anchor * w_t / w_anchor) for the others."""
        n, w = self.sizes[self.anchor], self.weights[self.anchor]
        return np.array([n if t == self.anchor else math.floor(n * self.weights[t] / w + 0.5) for t in self.tasks],
                        dtype=np.int64)

    def steps_in_epoch(self) -> int:
        """Batches the next `epoch_batches` call returns, for the current weights (nothing drawn)."""
        B = self.batch_size
        if self.protocol == "authors":
            q, m = self.authors_groups()
            return math.ceil(m * sum(q) / B)
        if self.anchor is None:
            return math.ceil(self.epoch_examples / B)
        rows = self.anchor_rows()
        if self.schedule == "heterogeneous":
            return math.ceil(int(rows.sum()) / B)
        return sum(math.ceil(int(r) / B) for r in rows)    # each task's own remainder batch

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
        """The `steps_in_epoch()` batches of `epoch` (counted from 0), each (task_ids (b,),
        example_ids (b,)) int64.

        Advances the state to the next epoch. Epochs must come in order; to regenerate an epoch,
        `load_state_dict` the state saved at its start.
        """
        if epoch != self.epoch:
            raise ValueError(f"epoch_batches({epoch}): the sampler is at epoch {self.epoch}; epochs come in order "
                             f"(load_state_dict the state saved at the start of epoch {epoch} to regenerate it)")
        if self.protocol == "authors":
            batches, groups, sizes = self._authors_epoch(epoch)
        elif self.schedule == "heterogeneous":
            batches, groups, sizes = self._mixed_epoch(epoch)
        else:
            batches, groups, sizes = self._single_task_batches_epoch(epoch)
        if self.lengths is not None:
            self._sort_by_length(batches, groups, sizes, _rng(_POOL, self.seed, epoch))
        self.epoch += 1
        return batches

    def _pools(self, slots: np.ndarray) -> list[np.ndarray]:
        return [slots[j:j + self.length_pool] for j in range(0, len(slots), self.length_pool)]

    def _in_order(self, task_ids: np.ndarray, example_ids: np.ndarray) -> tuple[list, list, np.ndarray]:
        """Mixed rows (N,) cut in order into batches of batch_size, the remainder batch last."""
        sizes = _cut(len(task_ids), self.batch_size)
        bounds = np.cumsum(sizes)[:-1]
        batches = list(zip(np.split(task_ids, bounds), np.split(example_ids, bounds)))
        return batches, self._pools(np.arange(len(sizes))), sizes

    def _authors_epoch(self, epoch: int) -> tuple[list, list, np.ndarray]:
        """multi_dataloader.py: every task freshly shuffled (`random_generator`), its first q_t * m
        rows kept (`sample_from_all_instances`), all rows shuffled together
        (`group_instances_heterogeneous`), cut in order into batches, last partial batch kept."""
        q, m = self.authors_groups()
        T = len(self.tasks)
        tids = np.repeat(np.arange(T), np.array(q) * m)
        eids = np.concatenate([
            _rng(_AUTHORS_SHUFFLE, self.seed, zlib.crc32(t.encode()), epoch).permutation(self.sizes[t])[:q_t * m]
            for t, q_t in zip(self.tasks, q)])
        order = _rng(_SCHEDULE, self.seed, epoch).permutation(len(tids))
        return self._in_order(tids[order], eids[order])

    def _mixed_epoch(self, epoch: int) -> tuple[list, list, np.ndarray]:
        """tl, heterogeneous: the epoch's task labels (quotas exact) shuffled, each task's rows read
        from its permutation stream, cut in order into batches, the remainder batch last."""
        T = len(self.tasks)
        if self.anchor is None:
            counts = apportion(self.epoch_examples, np.array([self.weights[t] for t in self.tasks]))
        else:
            counts = self.anchor_rows()
        labels = _rng(_SCHEDULE, self.seed, epoch).permutation(np.repeat(np.arange(T), counts))  # (N,)
        examples = np.empty(len(labels), dtype=np.int64)
        for i, t in enumerate(self.tasks):
            rows = labels == i
            examples[rows] = self._take(t, int(rows.sum()))
        return self._in_order(labels, examples)

    def _single_task_batches_epoch(self, epoch: int) -> tuple[list, list, np.ndarray]:
        """tl, homogeneous or partitioned: every batch from one task. Without an anchor the epoch's
        S batches are split between tasks by the weights (the remainder batch last); with one, each
        task's rows are cut into its own batches (its remainder batch its last)."""
        rng, T, B = _rng(_SCHEDULE, self.seed, epoch), len(self.tasks), self.batch_size
        if self.anchor is None:
            sizes = _cut(self.epoch_examples, B)
            slot_task = np.repeat(np.arange(T), apportion(len(sizes), np.array([self.weights[t] for t in self.tasks])))
            if self.schedule == "homogeneous":
                slot_task = rng.permutation(slot_task)
        else:
            per_task = [_cut(int(r), B) for r in self.anchor_rows()]
            slot_task = np.repeat(np.arange(T), [len(s) for s in per_task])
            sizes = np.concatenate(per_task)
            if self.schedule == "homogeneous":
                order = rng.permutation(len(sizes))
                slot_task, sizes = slot_task[order], sizes[order]
        batches, groups = [None] * len(sizes), []
        for i, t in enumerate(self.tasks):
            slots = np.flatnonzero(slot_task == i)
            ids = np.split(self._take(t, int(sizes[slots].sum())), np.cumsum(sizes[slots])[:-1])
            for s, e in zip(slots, ids):
                batches[s] = (np.full(len(e), i, dtype=np.int64), e)
            groups += self._pools(slots)
        return batches, groups, sizes

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


def _check_settings(sizes, batch_size, schedule, seed, length_pool, protocol, anchor, epoch_examples) -> None:
    """One-line ValueErrors for MultiTaskSampler's settings."""
    if not sizes:
        raise ValueError("MultiTaskSampler: no tasks given (sizes is empty)")
    bad = [f"{t}={n}" for t, n in sizes.items() if not _is_count(n, 1)]
    if bad:
        raise ValueError(f"MultiTaskSampler: task sizes must be integers >= 1, got {', '.join(bad)}")
    if not _is_count(batch_size, 1):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if not _is_count(seed, 0):
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if epoch_examples is not None and not _is_count(epoch_examples, 1):
        raise ValueError(f"epoch_examples must be an integer >= 1 or None, got {epoch_examples!r}")
    if not _is_count(length_pool, 1):
        raise ValueError(f"length_pool must be an integer >= 1, got {length_pool!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    if anchor is not None and anchor not in sizes:
        raise ValueError(f"anchor {anchor!r} is not one of the tasks {list(sizes)}")
    if anchor is not None and epoch_examples is not None:
        raise ValueError("give either anchor (an epoch is one pass over it) or epoch_examples, not both")
    if protocol == "authors":
        rules = {"schedule": (schedule, "heterogeneous"), "length_pool": (length_pool, 1),
                 "anchor": (anchor, None), "epoch_examples": (epoch_examples, None)}
        for name, (got, only) in rules.items():
            if got != only:
                raise ValueError(f"protocol 'authors' reproduces their heterogeneous epochs: it needs {name}={only!r}, "
                                 f"got {name}={got!r}")
        if batch_size < len(sizes):
            raise ValueError(f"protocol 'authors': batch_size {batch_size} is smaller than the {len(sizes)} tasks")
