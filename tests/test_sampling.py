"""Tests for tl/sampling.py: task weights by hand, task proportions (chi-square), sampling without
replacement, exact single-task epochs, determinism, resume from a state_dict, shards, padding."""
import json
import math

import numpy as np
import pytest
from scipy.stats import chisquare

from tl.sampling import SAMPLERS, SCHEDULES, MultiTaskSampler, apportion, shard, task_weights

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


def test_dynamic_weights_by_hand():
    sizes = {"A": 100, "B": 300, "C": 600}
    ref = {"A": 80.0, "B": 60.0, "C": 90.0}
    # first epoch (no current scores): by size
    assert task_weights("dynamic", sizes, reference=ref) == pytest.approx({"A": 0.1, "B": 0.3, "C": 0.6})
    # gaps: A 80 - 70 = 10; B 60 - 59.8 = 0.2 -> floor 0.5; C 90 - 95 = -5 -> floor 0.5; total 11
    cur = {"A": 70.0, "B": 59.8, "C": 95.0}
    got = task_weights("dynamic", sizes, reference=ref, current=cur, floor=0.5)
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


# -- proportions -----------------------------------------------------------------------------------
def test_heterogeneous_proportions_chi_square():
    s = sampler("heterogeneous")
    first = np.zeros(3, dtype=np.int64)
    for epoch in range(60):
        batches = s.epoch_batches(epoch)
        assert len(batches) == s.steps_per_epoch == math.ceil(1800 / 32)
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
        assert per_task.tolist() == apportion(s.steps_per_epoch, np.array([0.5, 0.3, 0.2])).tolist()
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
        for tids, eids in s.epoch_batches(epoch):
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
            assert s.steps_per_epoch == 16
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


# -- bad input ---------------------------------------------------------------------------------------
def one_line_error(fn, match):
    with pytest.raises(ValueError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


def test_bad_inputs_raise_clear_errors():
    one_line_error(lambda: task_weights("proportional", SIZES), "unknown sampler 'proportional'.*" + ".*".join(SAMPLERS))
    one_line_error(lambda: task_weights("dynamic", SIZES), "reference scores.*missing for: A, B, C")
    one_line_error(lambda: task_weights("dynamic", SIZES, reference={"A": 70.0}), "missing for: B, C")
    one_line_error(lambda: task_weights("dynamic", SIZES, reference={"A": 70.0, "B": 60.0, "C": 50.0},
                                        current={"A": 50.0}), "current scores.*missing for: B, C")
    one_line_error(lambda: task_weights("dynamic", SIZES, reference={"A": 0.7, "B": 0.6, "C": 0.5}), "x100")
    one_line_error(lambda: task_weights("temperature", SIZES, temperature=0), "temperature")
    one_line_error(lambda: task_weights("dynamic", SIZES, reference={"A": 70, "B": 60, "C": 50}, floor=0), "floor")
    for bs in (0, -4):
        one_line_error(lambda: MultiTaskSampler(SIZES, None, bs, "heterogeneous", 0), "batch_size")
    one_line_error(lambda: MultiTaskSampler(SIZES, None, 32, "mixed", 0), "unknown schedule 'mixed'.*heterogeneous")
    one_line_error(lambda: MultiTaskSampler(SIZES, None, 32, "heterogeneous", 0, length_pool=4), "lengths")
    one_line_error(lambda: MultiTaskSampler({"A": 0}, None, 32, "heterogeneous", 0), "A=0")
    one_line_error(lambda: MultiTaskSampler(SIZES, {"A": np.ones(3)}, 32, "heterogeneous", 0), "lengths\\['A'\\]")
    one_line_error(lambda: sampler().set_weights({"A": 1.0}), "exactly the tasks")
    one_line_error(lambda: sampler().set_weights({"A": -1.0, "B": 1.0, "C": 1.0}), ">= 0")
