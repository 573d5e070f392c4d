"""Tests for tl/sampling.py: task weights by hand, task proportions (chi-square), sampling without
replacement, exact single-task epochs, determinism, the random streams (what they depend on, and the
pinned first epochs a resumed checkpoint relies on), resume from a state_dict (and the state key by
key), shards, padding and length pools; the authors' quota rule on a hand-computed table and their
epochs' arithmetic; tl's anchored epochs; every error message whole. docs/TESTING.md lists the
mutants no test can fail on."""
import json
import math

import numpy as np
import pytest
from scipy.stats import chisquare

from tl.sampling import SCHEDULES, MultiTaskSampler, apportion, authors_quotas, shard, task_weights

SIZES = {"A": 1000, "B": 500, "C": 300}
WEIGHTS = {"A": 0.5, "B": 0.3, "C": 0.2}   # deliberately not proportional to size


def synthetic_lengths(sizes, means, seed=0):
    """Token counts per example, task means differing as GLUE's do (CoLA ~11 ... RTE ~67)."""
    rng = np.random.default_rng(seed)
    return {t: np.clip(rng.poisson(means[t], n), 2, 128) for t, n in sizes.items()}


def sampler(schedule="heterogeneous", sizes=SIZES, weights=WEIGHTS, **kw):
    s = MultiTaskSampler(sizes, kw.pop("lengths", None), kw.pop("batch_size", 32), schedule, kw.pop("seed", 7), **kw)
    if weights is not None:
        s.set_weights(weights)
    return s


def task_counts(batches, num_tasks):
    return np.bincount(np.concatenate([t for t, _ in batches]), minlength=num_tasks)


def pad_fraction(batches, lengths, tasks, rows_per_slice=None):
    """Padding tokens / all tokens when each slice of rows pads to its own longest row."""
    real = padded = 0
    for tids, eids in batches:
        lens = np.array([lengths[tasks[t]][e] for t, e in zip(tids, eids)])
        step = rows_per_slice or len(lens)
        for i in range(0, len(lens), step):
            piece = lens[i:i + step]
            real, padded = real + piece.sum(), padded + len(piece) * piece.max()
    return 1 - real / padded


# -- weights ---------------------------------------------------------------------------------------
def test_static_weights_by_hand():
    sizes = {"A": 100, "B": 400}
    assert task_weights("uniform", sizes) == pytest.approx({"A": 0.5, "B": 0.5})
    assert task_weights("size", sizes) == pytest.approx({"A": 100 / 500, "B": 400 / 500})
    # T = 2: sqrt(100) = 10, sqrt(400) = 20
    assert task_weights("temperature", sizes, temperature=2.0) == pytest.approx({"A": 10 / 30, "B": 20 / 30})
    assert list(task_weights("size", {"Z": 1, "A": 2})) == ["Z", "A"]    # order of the tasks kept
    assert task_weights("temperature", sizes) == pytest.approx({"A": 10 / 30, "B": 20 / 30})   # default T = 2
    # T = 0.5 (below 1: sharper than size): 100 ** 2 = 10^4, 400 ** 2 = 16 x 10^4
    assert task_weights("temperature", sizes, temperature=0.5) == pytest.approx({"A": 1 / 17, "B": 16 / 17})


def test_dynamic_weights_by_hand():
    sizes = {"A": 100, "B": 300, "C": 600}
    ref = {"A": 80.0, "B": 60.0, "C": 90.0}
    # first epoch (no current scores): by size
    assert task_weights("dynamic", sizes, reference=ref) == pytest.approx({"A": 0.1, "B": 0.3, "C": 0.6})
    # gaps: A 80 - 70 = 10; B 60 - 59.8 = 0.2 -> floor 0.5; C 90 - 95 = -5 -> floor 0.5; total 11
    cur = {"A": 70.0, "B": 59.8, "C": 95.0}
    got = task_weights("dynamic", sizes, reference=ref, current=cur)             # default floor 0.5
    assert got == pytest.approx({"A": 10 / 11, "B": 0.5 / 11, "C": 0.5 / 11})
    # floor 2: gaps 10, 2, 2, total 14
    got = task_weights("dynamic", sizes, reference=ref, current=cur, floor=2.0)
    assert got == pytest.approx({"A": 10 / 14, "B": 2 / 14, "C": 2 / 14})


def test_dynamic_softmax_by_hand():
    sizes = {"A": 100, "B": 300, "C": 600}
    ref, cur = {"A": 80.0, "B": 60.0, "C": 90.0}, {"A": 70.0, "B": 59.8, "C": 95.0}
    e = {"A": math.exp(0.10), "B": math.exp(0.002), "C": math.exp(-0.05)}    # gaps / 100
    total = e["A"] + e["B"] + e["C"]
    got = task_weights("dynamic-softmax", sizes, reference=ref, current=cur)
    assert got == pytest.approx({t: v / total for t, v in e.items()})
    assert max(got.values()) / min(got.values()) < 1.2                     # nearly uniform
    assert task_weights("dynamic-softmax", sizes, reference=ref) == pytest.approx({"A": 0.1, "B": 0.3, "C": 0.6})
    # the largest gap is subtracted before exp: a gap of 900 (scores off the 0-100 scale) does not overflow
    far = task_weights("dynamic-softmax", {"A": 1, "B": 1}, reference={"A": 90050.0, "B": 50.0},
                       current={"A": 50.0, "B": 50.0})
    assert far == {"A": 1.0, "B": 0.0}


def test_fraction_check_on_reference_scores():
    """Scores must be x100: with two or more tasks, all of them within [-1, 1] are refused as fractions."""
    exact_error(lambda: task_weights("dynamic", {"A": 10, "B": 30}, reference={"A": 1.0, "B": 0.5}),
                "reference scores {'A': 1.0, 'B': 0.5} look like fractions; give headline scores x100 (0-100)")
    assert task_weights("dynamic", {"A": 10, "B": 30}, reference={"A": 1.5, "B": 0.5}) == {"A": 0.25, "B": 0.75}
    # a single task weighs 1 whatever the scale of its scores
    assert task_weights("dynamic", {"A": 10}, reference={"A": 0.7}, current={"A": 0.5}) == {"A": 1.0}


def test_apportion_sums_and_rounds():
    counts = apportion(10, np.array([0.5, 0.3, 0.2]))
    assert counts.tolist() == [5, 3, 2]
    counts = apportion(7, np.array([1.0, 1.0, 1.0]))       # 2.33 each: one extra, to the first
    assert counts.tolist() == [3, 2, 2]
    rng = np.random.default_rng(0)
    for _ in range(100):
        w = rng.random(5)
        n = int(rng.integers(1, 10_000))
        c = apportion(n, w)
        assert c.sum() == n and np.all(np.abs(c - n * w / w.sum()) < 1)
    # 5.2, 2.8, 2.0: floors 5 + 2 + 2 = 9; the missing one goes to the largest remainder (.8), not the
    # largest share or the smallest remainder
    assert apportion(10, np.array([0.52, 0.28, 0.20])).tolist() == [5, 3, 2]
    # ties go to the earlier task, on every machine (a stable sort): 12 tasks, weights 2, 1, 2, 1, ...;
    # 3 rows: 1/3 of a row for each weight-2 task, 1/6 for the others -> tasks 0, 2 and 4
    assert apportion(3, np.array([2.0, 1.0] * 6)).tolist() == [1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0]


# -- proportions -----------------------------------------------------------------------------------
def test_heterogeneous_proportions_chi_square():
    s = sampler("heterogeneous")
    first = np.zeros(3, dtype=np.int64)
    for epoch in range(60):
        batches = s.epoch_batches(epoch)
        assert len(batches) == s.steps_in_epoch() == math.ceil(1800 / 32)
        assert all(len(t) == 32 for t, _ in batches[:-1]) and len(batches[-1][0]) == 1800 - 56 * 32
        # the epoch's quota is exact ...
        assert np.all(np.abs(task_counts(batches, 3) - 1800 * np.array([0.5, 0.3, 0.2])) < 1)
        # ... and each batch is a random draw from it: pool the first batch of every epoch
        first += task_counts(batches[:1], 3)
        assert len(set(map(tuple, (np.bincount(t, minlength=3) for t, _ in batches[:10])))) > 1
    expected = first.sum() * np.array([0.5, 0.3, 0.2])
    assert chisquare(first, expected).pvalue > 0.001


def test_homogeneous_proportions_chi_square():
    s = sampler("homogeneous")
    labels = []
    for epoch in range(60):
        batches = s.epoch_batches(epoch)
        for tids, _ in batches:
            assert np.all(tids == tids[0])                     # one task per batch
        labels += [t[0] for t, _ in batches[:5]]               # early batches of each epoch
        per_task = np.bincount([t[0] for t, _ in batches], minlength=3)
        assert per_task.tolist() == apportion(s.steps_in_epoch(), np.array([0.5, 0.3, 0.2])).tolist()
    observed = np.bincount(labels, minlength=3)
    assert chisquare(observed, len(labels) * np.array([0.5, 0.3, 0.2])).pvalue > 0.001


def test_partitioned_is_task_by_task():
    s = sampler("partitioned")
    batches = s.epoch_batches(0)
    first_task = [int(t[0]) for t, _ in batches]
    assert first_task == sorted(first_task)
    assert all(np.all(t == t[0]) for t, _ in batches)
    assert np.bincount(first_task, minlength=3).tolist() == apportion(len(batches), np.array([0.5, 0.3, 0.2])).tolist()


# -- without replacement -----------------------------------------------------------------------------
def test_no_repeat_before_exhaustion_row_order():
    """Heterogeneous without lengths keeps draw order: each task's stream is a chain of permutations."""
    sizes = {"A": 37, "B": 23, "C": 11}
    s = sampler("heterogeneous", sizes, {"A": 0.2, "B": 0.3, "C": 0.5}, batch_size=8, epoch_examples=50)
    stream = {i: [] for i in range(3)}
    for epoch in range(12):                                    # epochs end mid-permutation
        batches = s.epoch_batches(epoch)                       # 50 rows: 10, 15, 25
        assert [len(t) for t, _ in batches] == [8] * 6 + [2] and task_counts(batches, 3).tolist() == [10, 15, 25]
        for tids, eids in batches:
            for t, e in zip(tids, eids):
                stream[int(t)].append(int(e))
    for i, n in enumerate(sizes.values()):
        full = len(stream[i]) // n
        assert full >= 2
        for k in range(full):
            assert sorted(stream[i][k * n:(k + 1) * n]) == list(range(n))
        assert len(set(stream[i][full * n:])) == len(stream[i]) - full * n


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("pool", [1, 4])
def test_no_repeat_across_epochs_every_schedule(schedule, pool):
    sizes = {"A": 37, "B": 23, "C": 11}
    lengths = synthetic_lengths(sizes, {"A": 10, "B": 40, "C": 70})
    s = sampler(schedule, sizes, {"A": 0.2, "B": 0.3, "C": 0.5}, batch_size=4, epoch_examples=30,
                lengths=lengths, length_pool=pool)
    seen = {t: np.zeros(n, dtype=np.int64) for t, n in sizes.items()}
    for epoch in range(10):
        for tids, eids in s.epoch_batches(epoch):
            lens = [lengths[s.tasks[t]][e] for t, e in zip(tids, eids)]
            assert lens == sorted(lens)                        # every batch sorted, every task's
            for t, e in zip(tids, eids):
                seen[s.tasks[t]][e] += 1
        for counts in seen.values():                           # k full passes + part of one
            assert counts.max() - counts.min() <= 1


# -- single task, coverage ---------------------------------------------------------------------------
def test_single_task_covers_every_example_once_per_epoch():
    sizes = {"SST-2": 1000}
    lengths = synthetic_lengths(sizes, {"SST-2": 13})
    outputs = {}
    for schedule in SCHEDULES:
        for pool, lens in [(1, None), (1, lengths), (5, lengths)]:
            s = MultiTaskSampler(sizes, lens, 64, schedule, seed=3, length_pool=pool)
            assert s.steps_in_epoch() == 16
            epochs = [s.epoch_batches(e) for e in range(3)]
            for batches in epochs:
                ids = np.concatenate([e for _, e in batches])
                assert np.array_equal(np.sort(ids), np.arange(1000))
                assert [len(e) for _, e in batches] == [64] * 15 + [40]
            outputs[schedule, pool, lens is None] = epochs
    assert not np.array_equal(outputs["heterogeneous", 1, True][0][0][1], outputs["heterogeneous", 1, True][1][0][1])
    for schedule in ("homogeneous", "partitioned"):         # one task: the schedules coincide
        for key in [(1, True), (1, False), (5, False)]:
            for a, b in zip(outputs[("heterogeneous",) + key], outputs[(schedule,) + key]):
                assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))


def test_size_weights_cover_every_example_once_per_epoch():
    s = sampler("heterogeneous", weights=None)                # default weights: by size
    for epoch in range(3):
        batches = s.epoch_batches(epoch)
        for i, (t, n) in enumerate(SIZES.items()):
            ids = np.concatenate([e[tids == i] for tids, e in batches])
            assert np.array_equal(np.sort(ids), np.arange(n))


def test_defaults_and_smallest_settings():
    # defaults: batches of 128, seed 0
    default = MultiTaskSampler({"A": 300}).epoch_batches(0)
    assert [len(t) for t, _ in default] == [128, 128, 44]
    assert same_batches(default, MultiTaskSampler({"A": 300}, None, 128, "heterogeneous", 0).epoch_batches(0))
    # a task of one example; an epoch of one row (by size, 1/4 and 3/4: it goes to B)
    assert task_counts(MultiTaskSampler({"A": 1, "B": 3}, None, 2).epoch_batches(0), 2).tolist() == [1, 3]
    (tids, eids), = MultiTaskSampler({"A": 1, "B": 3}, None, 2, epoch_examples=1).epoch_batches(0)
    assert tids.tolist() == [1] and 0 <= eids[0] < 3
    # authors with batch_size = number of tasks: one row of each per group; m = min(1 // 1, 3 // 1) = 1
    (tids, eids), = MultiTaskSampler({"A": 1, "B": 3}, None, 2, protocol="authors").epoch_batches(0)
    assert sorted(tids.tolist()) == [0, 1]


def test_a_task_with_weight_zero_gets_no_rows():
    for schedule in SCHEDULES:
        for anchor, rows in [(None, [20, 0]), ("A", [10, 0])]:    # no anchor: 20 rows, all A's (two passes)
            s = MultiTaskSampler({"A": 10, "B": 10}, None, 4, schedule, anchor=anchor)
            s.set_weights({"A": 1.0, "B": 0.0})
            assert task_counts(s.epoch_batches(0), 2).tolist() == rows


# -- determinism and resume --------------------------------------------------------------------------
def same_batches(a, b):
    return len(a) == len(b) and all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_same_seed_same_batches(schedule):
    lengths = synthetic_lengths(SIZES, {"A": 10, "B": 40, "C": 70})
    runs = [sampler(schedule, lengths=lengths, length_pool=3, seed=seed) for seed in (5, 5, 6)]
    epochs = [[s.epoch_batches(e) for e in range(3)] for s in runs]
    assert all(same_batches(a, b) for a, b in zip(epochs[0], epochs[1]))
    assert not same_batches(epochs[0][0], epochs[2][0])


def rows_by_task(batches, num_tasks):
    """(every row's task id, task 0's example ids, task 1's, ...), each in row order."""
    tids, eids = np.concatenate([t for t, _ in batches]), np.concatenate([e for _, e in batches])
    return [tids.tolist()] + [eids[tids == i].tolist() for i in range(num_tasks)]


def test_random_streams_depend_on_seed_epoch_and_task():
    """The schedule changes with the seed and the epoch; a task's examples with the seed; and two tasks
    of the same size are not read in the same order (nor, under `authors`, cut at the same rows)."""
    sizes, equal = {"A": 70, "B": 70}, {"A": 0.5, "B": 0.5}
    setups = [{}, dict(schedule="homogeneous"), dict(schedule="homogeneous", anchor="A"), dict(protocol="authors")]
    for kw in setups:
        runs = []
        for seed in (0, 1):
            s = MultiTaskSampler(sizes, None, 8, seed=seed, **kw)
            s.set_weights(equal)
            runs.append([rows_by_task(s.epoch_batches(epoch), 2) for epoch in range(2)])
        (t, a, b), (t_next, _, _) = runs[0]
        (t_seed, a_seed, _), _ = runs[1]
        assert t != t_seed and t != t_next and a != a_seed and a != b, kw
        if kw.get("protocol") == "authors":                    # 68 of 70 rows kept: which ones
            assert sorted(a) != sorted(a_seed) and sorted(a) != sorted(b)


def test_streams_are_part_of_the_checkpoint_format():
    """A resumed run regenerates its epoch and each task's permutation from the seed and the saved
    cursors, so the random streams must not change while tl/train.py's CHECKPOINT_FORMAT stays the same:
    these are the first epochs of seed 1 (change the seeding -> bump the format and these strings)."""
    lengths = {"A": np.array([3, 1, 2, 2, 5, 4]), "B": np.array([2, 4, 1, 1])}
    setups = {"heterogeneous": dict(lengths=lengths, length_pool=2), "homogeneous": dict(schedule="homogeneous"),
              "authors": dict(protocol="authors")}
    got = {}
    for name, kw in setups.items():
        s = MultiTaskSampler({"A": 6, "B": 4}, kw.pop("lengths", None), 3, kw.pop("schedule", "heterogeneous"), 1, **kw)
        rows = [(t, e) for epoch in range(2) for tids, eids in s.epoch_batches(epoch) for t, e in zip(tids, eids)]
        got[name] = " ".join(f"{t}{e}" for t, e in rows)
    assert got == {"heterogeneous": "13 03 02 10 11 04 12 01 00 05 01 12 13 03 10 05 00 11 04 02",
                   "homogeneous": "03 02 04 13 11 10 00 05 01 12 01 05 03 12 13 10 11 12 10 04",
                   "authors": "01 11 04 05 03 12 02 00 10 01 02 12 00 10 13 05 03 04"}


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_state_dict_resume_gives_identical_batches(schedule):
    """A run killed mid-epoch 2, resumed from the state saved at the start of epoch 2 plus the step."""
    lengths = synthetic_lengths(SIZES, {"A": 10, "B": 40, "C": 70})
    ref = {"A": 80.0, "B": 70.0, "C": 60.0}
    dev = [None, {"A": 60.0, "B": 65.0, "C": 59.0}, {"A": 75.0, "B": 60.0, "C": 59.9},
           {"A": 78.0, "B": 69.0, "C": 50.0}]

    def weights(epoch):
        return task_weights("dynamic", SIZES, reference=ref, current=dev[epoch])

    def make():
        return MultiTaskSampler(SIZES, lengths, 32, schedule, seed=11, epoch_examples=1500, length_pool=2)

    full = make()
    uninterrupted = []
    for epoch in range(4):
        full.set_weights(weights(epoch))
        uninterrupted.append(full.epoch_batches(epoch))

    run = make()
    for epoch in range(2):
        run.set_weights(weights(epoch))
        run.epoch_batches(epoch)
    run.set_weights(weights(2))
    saved = json.dumps(run.state_dict())                      # the checkpoint: state at epoch start ...
    step = 17                                                 # ... and the step reached before the kill
    run.epoch_batches(2)

    resumed = make()
    resumed.load_state_dict(json.loads(saved))
    again = resumed.epoch_batches(2)
    assert same_batches(again[step:], uninterrupted[2][step:])
    resumed.set_weights(weights(3))
    assert same_batches(resumed.epoch_batches(3), uninterrupted[3])
    assert json.loads(json.dumps(resumed.state_dict())) == full.state_dict()


def test_state_dict_by_hand():
    """The sampler's part of a checkpoint, key by key: the settings, the epoch, the weights, the flag
    for the authors' quota rule, and each task's cursor into its current pass."""
    s = MultiTaskSampler({"A": 6, "B": 2}, None, 4, seed=5)
    settings = {"tasks": ["A", "B"], "sizes": {"A": 6, "B": 2}, "batch_size": 4, "schedule": "heterogeneous",
                "seed": 5, "epoch_examples": 8, "length_pool": 1, "protocol": "tl", "anchor": None}
    assert s.state_dict() == {**settings, "epoch": 0, "weights": {"A": 0.75, "B": 0.25}, "uniform": None,
                              "cursor": {"A": 0, "B": 0}, "passes": {"A": 0, "B": 0}}
    s.epoch_batches(0)                                        # by size: one whole pass over each task
    s.epoch_batches(1)
    s.set_weights({"A": 1.0, "B": 1.0}, uniform=False)
    s.epoch_batches(2)                                        # 4 rows each: half a pass of A, two of B
    state = {**settings, "epoch": 3, "weights": {"A": 0.5, "B": 0.5}, "uniform": False,
             "cursor": {"A": 4, "B": 0}, "passes": {"A": 2, "B": 4}}
    assert s.state_dict() == state
    resumed = MultiTaskSampler({"A": 6, "B": 2}, None, 4, seed=5)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    assert resumed.state_dict() == state


def test_load_state_dict_rejects_other_settings():
    state = sampler(batch_size=32).state_dict()
    with pytest.raises(ValueError, match="batch_size=32.*batch_size=16"):
        sampler(batch_size=16).load_state_dict(state)


def test_epochs_come_in_order():
    s = sampler()
    s.epoch_batches(0)
    with pytest.raises(ValueError, match="at epoch 1"):
        s.epoch_batches(0)


# -- distributed -------------------------------------------------------------------------------------
@pytest.mark.parametrize("world_size", [1, 2, 3, 8, 50])
def test_shard_union_is_the_global_batch(world_size):
    lengths = synthetic_lengths(SIZES, {"A": 10, "B": 40, "C": 70})
    s = sampler(lengths=lengths)
    for tids, eids in s.epoch_batches(0)[-2:]:                 # a full batch and the remainder batch
        parts = [shard(tids, eids, r, world_size) for r in range(world_size)]
        sizes = [len(p[0]) for p in parts]
        assert sum(sizes) == len(tids) and max(sizes) - min(sizes) <= 1
        rows = sorted(zip(np.concatenate([p[0] for p in parts]).tolist(), np.concatenate([p[1] for p in parts]).tolist()))
        assert rows == sorted(zip(tids.tolist(), eids.tolist()))
        batch_lens = sorted(lengths[s.tasks[t]][e] for t, e in zip(tids, eids))
        for pt, pe in parts:                                   # each rank's rows still sorted by length
            lens = [lengths[s.tasks[t]][e] for t, e in zip(pt, pe)]
            assert lens == sorted(lens)
            # balanced: every rank with rows holds one of the batch's world_size longest rows
            assert not lens or lens[-1] >= batch_lens[-min(world_size, len(batch_lens))]
    with pytest.raises(ValueError, match="rank"):
        shard(tids, eids, world_size, world_size)


# -- padding -----------------------------------------------------------------------------------------
def test_length_sorting_and_pooling_reduce_padding():
    sizes = {"CoLA": 3000, "MNLI": 3000, "RTE": 1000}
    lengths = synthetic_lengths(sizes, {"CoLA": 11, "MNLI": 39, "RTE": 67})
    weights = {"CoLA": 0.4, "MNLI": 0.4, "RTE": 0.2}
    epoch = {}
    for pool, lens in [(0, None), (1, lengths), (16, lengths)]:
        s = MultiTaskSampler(sizes, lens, 64, "heterogeneous", seed=1, length_pool=max(pool, 1))
        s.set_weights(weights)
        epoch[pool] = s.epoch_batches(0)
        counts = task_counts(epoch[pool], 3)                   # the mixture is exact over the epoch
        assert np.all(np.abs(counts - 7000 * np.array([0.4, 0.4, 0.2])) < 1)
    whole = {p: pad_fraction(b, lengths, list(sizes)) for p, b in epoch.items()}
    micro = {p: pad_fraction(b, lengths, list(sizes), rows_per_slice=8) for p, b in epoch.items()}
    assert whole[1] == pytest.approx(whole[0], abs=0.02)       # sorting inside a batch: same rows
    assert micro[1] < micro[0] - 0.2                           # ... but micro-batches pad far less
    assert whole[16] < whole[1] - 0.2                          # pooling: whole batches pad less
    # length_pool = 1 keeps each batch's drawn mixture: same task multiset per batch as unsorted
    for (t0, _), (t1, _) in zip(epoch[0], epoch[1]):
        assert np.array_equal(np.bincount(t0, minlength=3), np.bincount(t1, minlength=3))


def test_length_pools_are_consecutive_batches():
    """length_pool = 3: rows move only within batches 0-2, 3-5, ...; every batch keeps its size."""
    lengths = synthetic_lengths(SIZES, {"A": 10, "B": 40, "C": 70})
    plain = sampler(batch_size=8, epoch_examples=100).epoch_batches(0)
    pooled = sampler(batch_size=8, epoch_examples=100, lengths=lengths, length_pool=3).epoch_batches(0)
    assert [len(t) for t, _ in pooled] == [len(t) for t, _ in plain] == [8] * 12 + [4]

    def rows(batches):
        return sorted((int(t), int(e)) for tids, eids in batches for t, e in zip(tids, eids))
    for j in range(0, 13, 3):
        assert rows(pooled[j:j + 3]) == rows(plain[j:j + 3])


def test_pooled_pieces_are_dealt_afresh_each_epoch_and_seed():
    """One pool of all 10 batches of one task: the batch that gets the 8 shortest rows is drawn anew
    each epoch and for each seed (it is not always the same step)."""
    lengths = {"A": np.arange(80) + 2}                          # all different: examples 0-7 are the shortest

    def shortest(seed, epochs):
        s = MultiTaskSampler({"A": 80}, lengths, 8, seed=seed, length_pool=10)
        return [[int(e.max()) for _, e in s.epoch_batches(epoch)].index(7) for epoch in range(epochs)]
    assert len(set(shortest(0, 4))) > 1
    assert len({shortest(seed, 1)[0] for seed in range(4)}) > 1


# -- bad input ---------------------------------------------------------------------------------------
def one_line_error(fn, match):
    with pytest.raises(ValueError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


def exact_error(fn, message):
    with pytest.raises(ValueError) as info:
        fn()
    assert str(info.value) == message


def test_bad_inputs_raise_clear_errors():
    """Each message whole: what was wrong, the value given, the choices or the fix."""
    ref = "the mean best dev score x100 of its single-task runs"
    cases = [
        (lambda: task_weights("uniform", {}), "task_weights: no tasks given (sizes is empty)"),
        (lambda: task_weights("proportional", SIZES),
         "unknown sampler 'proportional'; choose one of: uniform, size, temperature, dynamic, dynamic-softmax"),
        (lambda: task_weights("dynamic", SIZES), f"sampler 'dynamic' needs reference scores for every task; "
                                                 f"missing for: A, B, C ({ref})"),
        (lambda: task_weights("dynamic-softmax", SIZES, reference={"A": 70.0}),
         f"sampler 'dynamic-softmax' needs reference scores for every task; missing for: B, C ({ref})"),
        (lambda: task_weights("dynamic-softmax", SIZES, reference={"A": 70, "B": 60, "C": 50}, current={"A": 50}),
         "sampler 'dynamic-softmax' needs current scores for every task; missing for: B, C "
         "(the multi-task model's latest dev score x100)"),
        (lambda: task_weights("dynamic", SIZES, reference={"A": 0.7, "B": 0.6, "C": 0.5}),
         "reference scores {'A': 0.7, 'B': 0.6, 'C': 0.5} look like fractions; give headline scores x100 (0-100)"),
        (lambda: task_weights("temperature", SIZES, temperature=0), "temperature must be > 0, got 0"),
        (lambda: task_weights("dynamic", SIZES, reference={"A": 70, "B": 60, "C": 50}, floor=0),
         "dynamic sampling floor must be > 0 points, got 0"),
        (lambda: MultiTaskSampler({}), "MultiTaskSampler: no tasks given (sizes is empty)"),
        (lambda: MultiTaskSampler({"A": 0, "B": 2, "C": -1}),
         "MultiTaskSampler: task sizes must be integers >= 1, got A=0, C=-1"),
        (lambda: MultiTaskSampler(SIZES, None, 0), "batch_size must be an integer >= 1, got 0"),
        (lambda: MultiTaskSampler(SIZES, None, -4), "batch_size must be an integer >= 1, got -4"),
        (lambda: MultiTaskSampler(SIZES, None, 32, "mixed"),
         "unknown schedule 'mixed'; choose one of: heterogeneous, homogeneous, partitioned"),
        (lambda: MultiTaskSampler(SIZES, None, 32, seed=-1), "seed must be an integer >= 0, got -1"),
        (lambda: MultiTaskSampler(SIZES, None, 32, epoch_examples=0),
         "epoch_examples must be an integer >= 1 or None, got 0"),
        (lambda: MultiTaskSampler(SIZES, None, 32, length_pool=0), "length_pool must be an integer >= 1, got 0"),
        (lambda: MultiTaskSampler(SIZES, None, 32, length_pool=2),
         "length_pool=2 needs the examples' lengths (lengths=None)"),
        (lambda: MultiTaskSampler(SIZES, {"A": np.ones(3)}, 32),
         "lengths['A'] must hold 1000 entries (one per example), got 3"),
        (lambda: MultiTaskSampler(SIZES, {"A": np.ones(1000)}, 32),
         "lengths['B'] must hold 500 entries (one per example), got none"),
        (lambda: sampler().set_weights({"A": 1.0}),
         "set_weights: need a weight for exactly the tasks ['A', 'B', 'C'], got ['A']"),
        (lambda: sampler().set_weights({"A": -1.0, "B": 1.0, "C": 1.0}),
         "set_weights: weights must be finite, >= 0 and not all 0, got {'A': -1.0, 'B': 1.0, 'C': 1.0}"),
        (lambda: sampler().set_weights({"A": 0.0, "B": 0.0, "C": 0.0}),
         "set_weights: weights must be finite, >= 0 and not all 0, got {'A': 0.0, 'B': 0.0, 'C': 0.0}"),
    ]
    for fn, message in cases:
        exact_error(fn, message)


# -- the authors' protocol: quotas -------------------------------------------------------------------
GLUE = {"MNLI": 392702, "QQP": 363846, "QNLI": 104743, "SST-2": 67349, "CoLA": 8551, "STS-B": 5749,
        "MRPC": 3668, "RTE": 2490, "WNLI": 635}
SOFTMAX_REF = {"CoLA": 55.0, "RTE": 70.0, "WNLI": 56.0}


def softmax3(cola, rte):
    """dynamic-softmax weights of CoLA, RTE, WNLI with WNLI's gap 0."""
    sizes = {"CoLA": 8551, "RTE": 2490, "WNLI": 635}
    current = {"CoLA": float(cola), "RTE": float(rte), "WNLI": 56.0}
    return list(task_weights("dynamic-softmax", sizes, reference=SOFTMAX_REF, current=current).values())


# (weights, batch size, uniform flag, quotas): x * B, Python's round (half to even), then the quirks
QUOTA_CASES = [
    # uniform: 2 tasks 64 + 64 = 128; 3 tasks 42.67 -> 43 each = 129 and 9 tasks 14.22 -> 14 each = 126,
    # left uncorrected
    ([0.5, 0.5], 128, None, [64, 64]),
    ([1 / 3] * 3, 128, None, [43, 43, 43]),
    ([1 / 9] * 9, 128, None, [14] * 9),
    # the same equal weights from a non-uniform sampler (size, equal sizes): 129 -> 128, the excess on task 0
    ([1 / 3] * 3, 128, False, [42, 43, 43]),
    # size, RTE + WNLI: 2490/3125*128 = 101.99 -> 102, 635/3125*128 = 26.01 -> 26; sum 128
    ([2490 / 3125, 635 / 3125], 128, None, [102, 26]),
    # size, RTE + MNLI: 0.81 -> 1, 127.19 -> 127; and target first the other way round
    ([2490 / 395192, 392702 / 395192], 128, None, [1, 127]),
    ([392702 / 395192, 2490 / 395192], 128, None, [127, 1]),
    # size, all nine: 52.93 49.04 14.12 9.08 1.15 0.78 0.49 0.34 0.09 -> 53 49 14 9 1 1 0 0 0 = 127;
    # +1 on task 0 (MNLI) -> 54; the three zeros each take one from the largest (MNLI) -> 51
    ([n / sum(GLUE.values()) for n in GLUE.values()], 128, None, [51, 49, 14, 9, 1, 1, 1, 1, 1]),
    # half to even and a shortfall: 3, 2.5 -> 2, 2.5 -> 2 = 7; the missing row goes to task 0
    ([0.375, 0.3125, 0.3125], 8, None, [4, 2, 2]),
    # an excess that empties task 0: 1, 1.5 -> 2, 1.5 -> 2 = 5 -> task 0 to 0 -> takes one from task 1
    ([0.25, 0.375, 0.375], 4, None, [1, 1, 2]),
    # a zero quota: 127.49 -> 127, 0.26 -> 0, 0 = 127 -> 128, 0, 0 -> each zero takes one from task 0
    ([0.996, 0.002, 0.002], 128, None, [126, 1, 1]),
    # batch == number of tasks: one each
    ([0.7, 0.2, 0.1], 3, None, [1, 1, 1]),
    # their own test (tests/transferprediction/test_dataset_sampling.py), where the sampler was uniform:
    # 6.4 4.8 3.2 1.6 -> 6 5 3 2 (16) and 8 6 4 2 (20)
    ([0.4, 0.3, 0.2, 0.1], 16, True, [6, 5, 3, 2]),
    ([0.4, 0.3, 0.2, 0.1], 20, True, [8, 6, 4, 2]),
    # dynamic-softmax (CoLA 30, RTE 50): 46.89 44.60 36.52 -> 47 45 37 = 129 -> task 0 gives one back,
    # although WNLI's fraction (.52) is the smallest
    (softmax3(30, 50), 128, None, [46, 45, 37]),
    # dynamic-softmax (CoLA 30, RTE 65): 49.28 40.35 38.38 -> 49 40 38 = 127 -> task 0 gets it: 50
    (softmax3(30, 65), 128, None, [50, 40, 38]),
    # dynamic-softmax (CoLA 55, RTE 70): all gaps equal -> 42.67 each; their `dynamic` corrects
    (softmax3(55, 70), 128, False, [42, 43, 43]),
]


@pytest.mark.parametrize("weights,batch_size,uniform,expected", QUOTA_CASES)
def test_authors_quotas_by_hand(weights, batch_size, uniform, expected):
    assert authors_quotas(weights, batch_size, uniform) == expected


def test_authors_quotas_refuse_what_their_code_refuses():
    one_line_error(lambda: authors_quotas([0.5, 0.4], 128), "sum to 1")
    one_line_error(lambda: authors_quotas([0.25] * 4, 3), "smaller than the 4 tasks")
    # 0.128 -> 0, 42.62 -> 43 three times = 129: task 0 goes to -1 (their code crashes later)
    one_line_error(lambda: authors_quotas([0.001, 0.333, 0.333, 0.333], 128, False), "negative")


# -- the authors' protocol: epochs -------------------------------------------------------------------
def authors(sizes, weights=None, uniform=None, **kw):
    s = MultiTaskSampler(sizes, kw.pop("lengths", None), kw.pop("batch_size", 128), seed=kw.pop("seed", 3),
                         protocol="authors", **kw)
    if weights is not None:
        s.set_weights(weights, uniform)
    return s


def rows_per_task(batches, sizes):
    ids = {i: np.concatenate([e[t == i] for t, e in batches]) for i in range(len(sizes))}
    for i, n in enumerate(sizes.values()):                      # inside an epoch: no repeats, valid ids
        assert len(np.unique(ids[i])) == len(ids[i]) and (len(ids[i]) == 0 or ids[i].max() < n)
    return [len(ids[i]) for i in range(len(sizes))]


# (sizes, weights, batches' sizes, rows per task), all by hand from rule 1 of docs/PROTOCOL.md
EPOCH_CASES = [
    # RTE + WNLI (2490, 635), uniform: q = 64, 64; m = min(2490 // 64 = 38, 635 // 64 = 9) = 9 groups;
    # 9 * 64 = 576 rows of each, 1152 rows = 9 batches of 128
    ({"RTE": 2490, "WNLI": 635}, "uniform", [128] * 9, [576, 576]),
    # size: q = 102, 26; m = min(2490 // 102 = 24, 635 // 26 = 24) = 24; 2448 + 624 = 3072 = 24 x 128
    ({"RTE": 2490, "WNLI": 635}, "size", [128] * 24, [2448, 624]),
    # three tasks, uniform: q = 43 each (129 a group); m = min(23, 11, 6) = 6; 258 rows each, 774 rows:
    # 6 batches of 128 and a last one of 6, kept (their DataLoader's drop_last=False)
    ({"A": 1000, "B": 500, "C": 300}, "uniform", [128] * 6 + [6], [258, 258, 258]),
    # one task: q = 128, m = 1000 // 128 = 7: 896 rows, the last 104 dropped every epoch
    ({"SST-2": 1000}, "uniform", [128] * 7, [896]),
]


@pytest.mark.parametrize("sizes,kind,batch_sizes,rows", EPOCH_CASES)
def test_authors_epoch_composition(sizes, kind, batch_sizes, rows):
    s = authors(sizes, task_weights(kind, sizes), uniform=kind == "uniform")
    assert s.steps_in_epoch() == len(batch_sizes)
    epochs = [s.epoch_batches(e) for e in range(3)]
    for batches in epochs:
        assert [len(t) for t, _ in batches] == batch_sizes
        assert rows_per_task(batches, sizes) == rows
    # a fresh shuffle of every task each epoch: the rows kept differ between epochs
    first = [np.sort(np.concatenate([e[t == 0] for t, e in b])) for b in epochs]
    assert not np.array_equal(first[0], first[1])
    # tasks mixed inside batches (all rows shuffled together), not one task per batch
    if len(sizes) > 1:
        assert any(len(np.unique(t)) > 1 for t, _ in epochs[0])


def test_authors_dynamic_epochs_change_length():
    """Their `dynamic`: the first epoch by size, then dynamic-softmax weights from the dev scores;
    quotas and the epoch's length recomputed each epoch; the LR schedule uses the first length."""
    sizes = {"RTE": 2490, "WNLI": 635}
    ref = {"RTE": 70.0, "WNLI": 56.0}
    s = authors(sizes)                                           # starts by size
    t_total_epoch = s.steps_in_epoch()                           # run_glue.py: len(train_dataloader) before training
    assert t_total_epoch == 24                                   # q = 102, 26; m = 24 (EPOCH_CASES)
    assert len(s.epoch_batches(0)) == 24
    # gaps 0.10 and 0.01 -> softmax 0.5225, 0.4775 -> 66.88, 61.12 -> q = 67, 61;
    # m = min(2490 // 67 = 37, 635 // 61 = 10) = 10; 10 * 128 = 1280 rows = 10 batches
    s.set_weights(task_weights("dynamic-softmax", sizes, reference=ref, current={"RTE": 60.0, "WNLI": 55.0}))
    assert authors_quotas(list(s.weights.values()), 128) == [67, 61]
    assert s.steps_in_epoch() == 10
    batches = s.epoch_batches(1)
    assert len(batches) == 10 and rows_per_task(batches, sizes) == [670, 610]
    # equal gaps: equal weights but their `dynamic` corrects: 64, 64 (no excess here); m = 9
    s.set_weights(task_weights("dynamic-softmax", sizes, reference=ref, current={"RTE": 69.0, "WNLI": 55.0}), False)
    assert s.steps_in_epoch() == 9 and len(s.epoch_batches(2)) == 9


def test_authors_uniform_flag_is_kept_and_resumed():
    """Equal weights: from `uniform`, 43 rows each (129-row groups); from another sampler (`size` over
    equal sizes), corrected to 128 at task 0: 42, 43, 43. m = 1000 // 43 = 1000 // 42 = 23 groups."""
    sizes, equal = {"A": 1000, "B": 1000, "C": 1000}, {"A": 1 / 3, "B": 1 / 3, "C": 1 / 3}
    s = authors(sizes, equal)                                 # None: equal weights read as uniform
    assert s.authors_groups() == ([43, 43, 43], 23) and s.steps_in_epoch() == 24    # 2967 rows
    s.set_weights(equal, uniform=False)
    assert s.authors_groups() == ([42, 43, 43], 23) and s.steps_in_epoch() == 23    # 2944 rows
    resumed = authors(sizes)
    resumed.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert resumed.authors_groups() == ([42, 43, 43], 23)


def test_authors_sorting_inside_batches_keeps_composition():
    sizes = {"A": 1000, "B": 500, "C": 300}
    lengths = synthetic_lengths(sizes, {"A": 10, "B": 40, "C": 70})
    plain = authors(sizes, task_weights("uniform", sizes)).epoch_batches(0)
    ordered = authors(sizes, task_weights("uniform", sizes), lengths=lengths).epoch_batches(0)
    assert len(plain) == len(ordered)
    for (t0, e0), (t1, e1) in zip(plain, ordered):
        assert sorted(zip(t0.tolist(), e0.tolist())) == sorted(zip(t1.tolist(), e1.tolist()))
        lens = [lengths[list(sizes)[t]][e] for t, e in zip(t1, e1)]
        assert lens == sorted(lens)


def test_authors_refuses_what_it_cannot_reproduce():
    sizes = {"RTE": 2490, "WNLI": 635}
    lens = synthetic_lengths(sizes, {"RTE": 67, "WNLI": 37})
    needs = "protocol 'authors' reproduces their heterogeneous epochs: it needs "
    exact_error(lambda: MultiTaskSampler(sizes, None, 128, "homogeneous", protocol="authors"),
                needs + "schedule='heterogeneous', got schedule='homogeneous'")
    exact_error(lambda: MultiTaskSampler(sizes, lens, 128, length_pool=4, protocol="authors"),
                needs + "length_pool=1, got length_pool=4")
    exact_error(lambda: MultiTaskSampler(sizes, None, 128, protocol="authors", anchor="RTE"),
                needs + "anchor=None, got anchor='RTE'")
    exact_error(lambda: MultiTaskSampler(sizes, None, 128, protocol="authors", epoch_examples=100),
                needs + "epoch_examples=None, got epoch_examples=100")
    exact_error(lambda: MultiTaskSampler(sizes, None, 128, protocol="fair"),
                "unknown protocol 'fair'; choose one of: tl, authors")
    exact_error(lambda: MultiTaskSampler(sizes, None, 1, protocol="authors"),
                "protocol 'authors': batch_size 1 is smaller than the 2 tasks")
    # a task smaller than its quota empties the epoch; one exactly at its quota gives one group
    empty = "authors protocol: a task has fewer examples than its quota per batch, so the epoch is empty: "
    exact_error(authors({"A": 5000, "B": 30}, {"A": 0.5, "B": 0.5}).steps_in_epoch, empty + "B (30 < 64)")
    three = authors({"A": 43, "B": 40, "C": 10}, {"A": 1 / 3, "B": 1 / 3, "C": 1 / 3})     # 43 each
    exact_error(three.steps_in_epoch, empty + "B (40 < 43), C (10 < 43)")


# -- tl's anchored epochs ----------------------------------------------------------------------------
def test_anchor_epoch_is_one_pass_over_the_anchor():
    sizes = {"RTE": 2490, "MNLI": 392702}
    cases = [  # (anchor, weights, rows per task): others get round-half-up(n_anchor * w / w_anchor)
        ("RTE", task_weights("uniform", sizes), [2490, 2490]),
        ("RTE", task_weights("size", sizes), [2490, 392702]),
        ("RTE", {"RTE": 0.3, "MNLI": 0.7}, [2490, 5810]),            # 2490 * 7 / 3 = 5810
        ("MNLI", task_weights("uniform", sizes), [392702, 392702]),  # RTE 157.7 passes
        ("MNLI", task_weights("size", sizes), [2490, 392702]),
    ]
    for anchor, weights, rows in cases:
        s = MultiTaskSampler(sizes, None, 128, seed=2, anchor=anchor)
        s.set_weights(weights)
        for epoch in range(2):
            assert s.steps_in_epoch() == math.ceil(sum(rows) / 128)
            batches = s.epoch_batches(epoch)
            assert len(batches) == math.ceil(sum(rows) / 128)
            assert all(len(t) == 128 for t, _ in batches[:-1])
            assert task_counts(batches, 2).tolist() == rows
            i = s.tasks.index(anchor)                            # the anchor: each example exactly once
            ids = np.concatenate([e[t == i] for t, e in batches])
            assert np.array_equal(np.sort(ids), np.arange(sizes[anchor]))


def test_anchor_rounding_is_half_up():
    # 5 * 0.25 / 0.5 = 2.5 -> 3 (Python's round would give 2); 5 * 0.25 / 0.5 for C too
    s = MultiTaskSampler({"A": 5, "B": 40, "C": 40}, None, 4, anchor="A")
    s.set_weights({"A": 0.5, "B": 0.25, "C": 0.25})
    assert s.anchor_rows().tolist() == [5, 3, 3]
    assert task_counts(s.epoch_batches(0), 3).tolist() == [5, 3, 3]
    one_line_error(lambda: s.set_weights({"A": 0.0, "B": 0.5, "C": 0.5}), "anchor task 'A' needs a weight > 0")


@pytest.mark.parametrize("schedule", ["homogeneous", "partitioned"])
def test_anchor_single_task_batches(schedule):
    """Homogeneous and partitioned with an anchor: each task's rows cut into its own batches."""
    sizes = {"A": 100, "B": 37, "C": 1000}
    s = MultiTaskSampler(sizes, None, 16, schedule, seed=4, anchor="A")
    s.set_weights({"A": 0.5, "B": 0.2, "C": 0.3})               # rows 100, 40, 60
    assert s.steps_in_epoch() == 7 + 3 + 4
    batches = s.epoch_batches(0)
    assert len(batches) == 14 and all(np.all(t == t[0]) for t, _ in batches)
    assert task_counts(batches, 3).tolist() == [100, 40, 60]
    per_task = {i: sorted((len(t) for t, _ in batches if t[0] == i), reverse=True) for i in range(3)}
    assert per_task == {0: [16] * 6 + [4], 1: [16, 16, 8], 2: [16] * 3 + [12]}
    order = [int(t[0]) for t, _ in batches]
    assert (order == sorted(order)) == (schedule == "partitioned")   # homogeneous: the batches shuffled


def test_anchor_settings_checked():
    one_line_error(lambda: MultiTaskSampler(SIZES, None, 32, anchor="Z"), "anchor 'Z'")
    exact_error(lambda: MultiTaskSampler(SIZES, None, 32, anchor="A", epoch_examples=10),
                "give either anchor (an epoch is one pass over it) or epoch_examples, not both")
    state = MultiTaskSampler(SIZES, None, 32, anchor="A").state_dict()
    with pytest.raises(ValueError, match="anchor='A'.*anchor='B'"):
        MultiTaskSampler(SIZES, None, 32, anchor="B").load_state_dict(state)
    old = MultiTaskSampler(SIZES, None, 32).state_dict()         # saved before protocols existed
    for key in ("protocol", "anchor", "uniform"):
        old.pop(key)
    MultiTaskSampler(SIZES, None, 32).load_state_dict(old)


# -- both protocols: resume and seeds ----------------------------------------------------------------
PROTOCOL_SETUPS = {
    "authors": dict(protocol="authors"),
    "tl-anchor": dict(anchor="B", length_pool=2),
    "tl-anchor-homogeneous": dict(anchor="B", schedule="homogeneous"),
}


def make_protocol_sampler(setup, seed=11):
    kw = dict(PROTOCOL_SETUPS[setup])
    lengths = synthetic_lengths(SIZES, {"A": 10, "B": 40, "C": 70})
    return MultiTaskSampler(SIZES, lengths, 32, kw.pop("schedule", "heterogeneous"), seed, **kw)


def protocol_weights(epoch):
    ref = {"A": 80.0, "B": 70.0, "C": 60.0}
    dev = [None, {"A": 60.0, "B": 65.0, "C": 59.0}, {"A": 75.0, "B": 60.0, "C": 59.9},
           {"A": 78.0, "B": 69.0, "C": 50.0}]
    return task_weights("dynamic-softmax", SIZES, reference=ref, current=dev[epoch])


@pytest.mark.parametrize("setup", PROTOCOL_SETUPS)
def test_resume_gives_identical_batches_both_protocols(setup):
    full, uninterrupted = make_protocol_sampler(setup), []
    for epoch in range(4):
        full.set_weights(protocol_weights(epoch))
        uninterrupted.append(full.epoch_batches(epoch))
    assert len({len(b) for b in uninterrupted}) > 1               # the epoch's length follows the weights

    run = make_protocol_sampler(setup)
    for epoch in range(2):
        run.set_weights(protocol_weights(epoch))
        run.epoch_batches(epoch)
    run.set_weights(protocol_weights(2))
    saved, step = json.dumps(run.state_dict()), 5
    run.epoch_batches(2)

    resumed = make_protocol_sampler(setup)
    resumed.load_state_dict(json.loads(saved))
    assert resumed.steps_in_epoch() == len(uninterrupted[2])
    assert same_batches(resumed.epoch_batches(2)[step:], uninterrupted[2][step:])
    resumed.set_weights(protocol_weights(3))
    assert same_batches(resumed.epoch_batches(3), uninterrupted[3])
    assert json.loads(json.dumps(resumed.state_dict())) == full.state_dict()


@pytest.mark.parametrize("setup", PROTOCOL_SETUPS)
def test_same_seed_same_batches_both_protocols(setup):
    runs = [make_protocol_sampler(setup, seed) for seed in (5, 5, 6)]
    epochs = [[s.epoch_batches(e) for e in range(2)] for s in runs]
    assert all(same_batches(a, b) for a, b in zip(epochs[0], epochs[1]))
    assert not same_batches(epochs[0][0], epochs[2][0])
