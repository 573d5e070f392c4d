"""The transfer methods: the jobs a configuration plans (dependencies as data), mixed-batch gradients,
the recipes on real samples with MiniLM under both protocols, dynamic sampling from single runs, a
killed multi-task run, bad input."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tl.heads import HeadSpec, MultiTaskModel
from tl.model import Encoder, EncoderConfig
from tl.tasks import GLUE_TASKS, get_task
from tl.data import collate as collate_rows
from tl.train import TrainSettings
from helpers import checkpoint_step
from dataclasses import replace

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"


def tiny_config(**kw) -> EncoderConfig:
    base = dict(model_type="bert", vocab_size=30522, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)
    base.update(kw)
    return EncoderConfig(**base)


# ---------------------------------------------------------------------------------------------
# plans: each run's dependencies as data

SIZES = {"RTE": 2490, "MNLI": 392702, "QNLI": 104743, "MRPC": 3668, "WNLI": 635}


def test_stilts_plans_its_support_singles_first():
    from tl.recipes import PAPER_SEEDS, RunConfig, plan

    jobs = plan(RunConfig(mode="stilts", tasks=("rte", "mnli"), seeds=(42, 7)), TrainSettings(), SIZES.get)
    supports = [f"single__mnli__s{s}" for s in PAPER_SEEDS]  # --support-seeds: the paper's five, whatever --seeds
    assert [j.run_id for j in jobs] == supports + ["stilts__rte+mnli__s42", "stilts__rte+mnli__s7"]
    for j in jobs[:5]:
        assert j.mode == "single" and j.needs == () and j.outputs == (j.run_id,) and j.cfg.seeds == (j.seed,)
    for j, seed in zip(jobs[5:], (42, 7)):
        assert j.needs == tuple(supports) and j.outputs == (j.run_id,) and j.seed == seed and j.cfg.seeds == (seed,)
        assert (j.target, j.supports, j.cfg.mode, j.cfg.tasks) == ("RTE", ("MNLI",), "stilts", ("RTE", "MNLI"))
    # a subsampled support: the single runs it continues from are subsampled alike (--target-size)
    jobs = plan(RunConfig(mode="stilts", tasks=("qnli", "mnli"), seeds=(1,), support_size="1/2x", support_seeds=(5,)),
                TrainSettings(), SIZES.get)
    assert [j.run_id for j in jobs] == ["single__mnli__tgt52372__s5", "stilts__qnli+mnli__sup1_2x__s1"]
    assert jobs[0].cfg.target_size == 52372 and jobs[1].needs == ("single__mnli__tgt52372__s5",)


def test_authors_pair_is_one_job_with_a_record_per_target():
    """bin/glue/execute_glue trains each unordered pair once (CoLA SST-2 MRPC QQP STS-B MNLI QNLI RTE
    WNLI, i < j): rte,mnli and mnli,rte plan the same job, which writes both targets' records."""
    from tl.recipes import RunConfig, plan

    authors = TrainSettings(protocol="authors")  # --sampler auto: uniform for pairs
    a = plan(RunConfig(mode="mtl", tasks=("rte", "mnli"), seeds=(42,)), authors, SIZES.get)
    b = plan(RunConfig(mode="mtl", tasks=("mnli", "rte"), seeds=(42,)), authors, SIZES.get)
    assert a == b and len(a) == 1
    (job,) = a
    assert job.run_id == "authors__mtl__mnli+rte__uniform__s42" and job.needs == ()
    assert job.outputs == ("authors__mtl__mnli+rte__uniform__s42", "authors__mtl__rte+mnli__uniform__s42")
    assert job.settings.sampler == "uniform" and job.settings.protocol == "authors"
    # tl: ordered, one record, ids as before
    (tl_job,) = plan(RunConfig(mode="mtl", tasks=("rte", "mnli"), seeds=(42,)), TrainSettings(sampler="size"), SIZES.get)
    assert tl_job.run_id == "mtl__rte+mnli__size__s42" and tl_job.outputs == (tl_job.run_id,)
    # a size setting makes the target special: the asked order, one record
    (sized,) = plan(RunConfig(mode="mtl", tasks=("rte", "mnli"), seeds=(42,), support_size="2x"), authors, SIZES.get)
    assert sized.run_id == "authors__mtl__rte+mnli__uniform__sup2x__s42" and sized.outputs == (sized.run_id,)


def test_dynamic_sampling_needs_its_reference_runs():
    from tl.recipes import RunConfig, plan

    cfg = RunConfig(mode="mtl", tasks=("qnli", "mnli"), seeds=(1,), support_size="2x", support_seeds=(7, 8))
    jobs = plan(cfg, TrainSettings(sampler="auto"), SIZES.get)  # auto: dynamic under tl
    refs = ["single__qnli__s7", "single__qnli__s8", "single__mnli__tgt209486__s7", "single__mnli__tgt209486__s8"]
    assert [j.run_id for j in jobs] == refs + ["mtl__qnli+mnli__dynamic__sup2x__s1"]
    assert jobs[-1].needs == tuple(refs)
    # scores given in a file: nothing to wait for
    (given,) = plan(replace(cfg, reference_scores="refs.json"), TrainSettings(sampler="dynamic"), SIZES.get)
    assert given.needs == ()
    # authors: "dynamic" is their softmax variant; references are authors' single runs; mtl_all
    # writes the joint record and one per task
    jobs = plan(RunConfig(mode="mtl_all", tasks=("rte", "wnli"), seeds=(3,), support_seeds=(7,)),
                TrainSettings(sampler="dynamic", protocol="authors"), SIZES.get)
    joint = "authors__mtl_all__rte+wnli__dynamic-softmax__s3"
    assert [j.run_id for j in jobs] == ["authors__single__rte__s7", "authors__single__wnli__s7", joint]
    assert jobs[-1].needs == ("authors__single__rte__s7", "authors__single__wnli__s7")
    assert jobs[-1].outputs == (joint, "authors__mtl_all__rte__dynamic-softmax__s3",
                                "authors__mtl_all__wnli__dynamic-softmax__s3")
    (size_all,) = plan(RunConfig(mode="mtl_all", tasks=("rte", "wnli"), seeds=(3,)),
                       TrainSettings(protocol="authors"), SIZES.get)
    assert size_all.settings.sampler == "size"  # auto under authors: Table 1's MTL-ALL column


def test_plan_sizes_from_the_real_glue_files():
    """The sizes a plan gives dependency runs, from the real training files (what the grid counts)."""
    glue = os.environ.get("TL_GLUE_DIR")
    if not glue:
        pytest.skip("TL_GLUE_DIR is not set: the real GLUE folder (python tools/download_glue.py) is needed for full sizes")
    from tl.recipes import RunConfig, plan
    from tl.tasks import read_split

    count = lambda t: len(read_split(get_task(t), glue, "train"))  # noqa: E731
    jobs = plan(RunConfig(mode="stilts", tasks=("rte", "wnli"), seeds=(1,), support_size="1/3x", support_seeds=(2,),
                          data_dir=glue), TrainSettings(), count)
    assert count("RTE") == 2490 and count("WNLI") == 635
    # round(2490 / 3) = 830 > 635 rows: the support keeps all its rows, so its singles are the plain ones
    assert [j.run_id for j in jobs] == ["single__wnli__s2", "stilts__rte+wnli__sup1_3x__s1"]
    assert jobs[0].cfg.target_size == 0 and jobs[1].needs == ("single__wnli__s2",)
    # RTE with SST-2 at a third of RTE's size: 830 of SST-2's 67,349 rows, the support runs' --target-size
    jobs = plan(RunConfig(mode="stilts", tasks=("rte", "sst2"), seeds=(1,), support_size="1/3x", support_seeds=(2,),
                          data_dir=glue), TrainSettings(), count)
    assert count("SST-2") == 67349
    assert [j.run_id for j in jobs] == ["single__sst2__tgt830__s2", "stilts__rte+sst2__sup1_3x__s1"]


# ---------------------------------------------------------------------------------------------
# one mixed batch = the weighted sum of its tasks' sub-batches


def test_mixed_batch_gradient_is_weighted_sum_of_task_gradients(minilm_path):
    """A heterogeneous batch (RTE, STS-B, MNLI rows interleaved, unequal lengths) gives the gradient
    sum_t (n_t / N) * grad(mean loss of task t's rows), each task's rows run on their own (and so
    padded differently). fp32, <= 1e-6."""
    from tl.data import load_tokenized
    from tl.tokenizer import Tokenizer

    tok = Tokenizer.from_checkpoint(minilm_path)
    names = ["RTE", "STS-B", "MNLI"]
    splits = [load_tokenized(get_task(n), "train", tok, 128, SAMPLES, progress=False) for n in names]
    torch.manual_seed(0)
    specs = [HeadSpec(n, 1 if get_task(n).is_regression else get_task(n).num_labels, get_task(n).is_regression)
             for n in names]
    model = MultiTaskModel(Encoder(tiny_config()), specs).train()  # dropout is 0: train mode is deterministic

    rng = np.random.default_rng(0)
    task_ids = rng.permutation(np.repeat([0, 1, 2], [5, 3, 4]))  # N = 12, interleaved
    example_ids = np.array([rng.integers(len(splits[t])) for t in task_ids])
    N = len(task_ids)

    def grads(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}

    per_row = model.losses(collate_rows(splits, task_ids, example_ids, pad_id=tok.pad_id))
    total, n = per_row.sum(), len(per_row)
    assert n == N
    mixed = grads(total / N)

    expected = {k: torch.zeros_like(v) for k, v in mixed.items()}
    for t in range(3):
        rows = task_ids == t
        sub = collate_rows(splits, task_ids[rows], example_ids[rows], pad_id=tok.pad_id)
        assert sub["input_ids"].shape[1] <= collate_rows(splits, task_ids, example_ids, tok.pad_id)["input_ids"].shape[1]
        sub_rows = model.losses(sub)
        sub_total, n_t = sub_rows.sum(), len(sub_rows)
        for k, g in grads(sub_total / n_t).items():  # the task's mean-loss gradient, weighted n_t / N
            expected[k] += g * (n_t / N)
    assert set(expected) == set(mixed)
    for k in mixed:
        torch.testing.assert_close(mixed[k], expected[k], atol=1e-6, rtol=0, msg=k)
    # each head received gradient only from its own rows: all three heads moved
    assert all(mixed[f"heads.{s.task}.classifier.weight"].abs().sum() > 0 for s in specs)


# ---------------------------------------------------------------------------------------------
# the recipes on the real samples with the real MiniLM (small limits)


@pytest.fixture(scope="module")
def grid(tmp_path_factory, minilm_path):
    """single rte/mrpc (2 seeds each), stilts rte<-mrpc, mtl rte+mrpc (size, and dynamic with the
    references found from the single runs), and mtl_all over the nine sample tasks, in one folder."""
    from tl.recipes import RunConfig
    from tl.study.jobs import run

    base = tmp_path_factory.mktemp("recipes")
    common = dict(model=str(minilm_path), data_dir=str(SAMPLES), results_dir=str(base / "results"),
                  cache_dir=str(base / "cache"), limit_train=32, device="cpu")
    settings = TrainSettings(epochs=1, batch_size=16, lr=1e-4, evals_per_epoch=1, eval_batch_size=64,
                             progress=False, sampler="size")
    out = {"results": base / "results", "cfg": common, "settings": settings}
    out["single"] = run(RunConfig(mode="single", tasks=("rte",), seeds=(1, 2), **common), settings)
    out["single"] += run(RunConfig(mode="single", tasks=("mrpc",), seeds=(1, 2), **common), settings)
    out["stilts"] = run(RunConfig(mode="stilts", tasks=("rte", "mrpc"), seeds=(1,), support_seeds=(1, 2), **common),
                        settings)
    out["mtl"] = run(RunConfig(mode="mtl", tasks=("rte", "mrpc"), seeds=(1,), **common), settings)
    # weights change at epoch 2; its reference single runs are trained with its settings (2 epochs),
    # so in a folder of its own: one results folder holds one setting of each run id
    out["dynamic_results"] = base / "dynamic"
    out["dynamic"] = run(RunConfig(mode="mtl", tasks=("rte", "mrpc"), seeds=(1,), support_seeds=(1, 2),
                                   **{**common, "results_dir": str(base / "dynamic")}),
                         replace(settings, sampler="dynamic", epochs=2))
    out["mtl_all"] = run(RunConfig(mode="mtl_all", tasks=(), seeds=(1,), **{**common, "limit_train": 16}),
                         settings)
    return out


def assert_complete(record: dict, tasks: list[str]):
    assert record["status"] == "complete", record["run_id"]
    assert math.isfinite(record["score"]) and record["score"] == record["best"][record["target"]]["score"]
    for t in tasks:
        assert t in record["best"] and math.isfinite(record["best"][t]["score"]), (record["run_id"], t)
    assert record["steps"] > 0 and record["env"]["torch"] == torch.__version__
    on_disk = json.loads((Path(record["config"]["results_dir"]) / record["run_id"] / "record.json").read_text())
    assert on_disk["score"] == record["score"]


def test_single_and_mtl_records(grid):
    for r in grid["single"]:
        assert_complete(r, [r["target"]])
        assert r["mode"] == "single" and r["train_sizes"] == {r["target"]: 32}
    (mtl,) = grid["mtl"]
    assert_complete(mtl, ["RTE", "MRPC"])
    assert mtl["run_id"] == "mtl__rte+mrpc__size__lim32__s1" and mtl["sampler"] == "size"
    assert mtl["train_sizes"] == {"RTE": 32, "MRPC": 32}
    # tl: an epoch is one pass over the target (32) and MRPC in the sampler's proportion (32:32): 4 steps of 16
    log = [json.loads(x) for x in (grid["results"] / mtl["run_id"] / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [4]
    assert (grid["results"] / mtl["run_id"] / "best" / "model.safetensors").exists()
    assert not list((grid["results"] / mtl["run_id"]).glob("checkpoint*"))  # the resume state went at the end


def test_tl_pairwise_epoch_is_one_pass_over_the_target(grid):
    """Under tl an epoch of pairwise MTL is one pass over the target: the target's passes equal its
    single runs' passes; every record says its protocol and what it consumed."""
    (mtl,) = grid["mtl"]
    single = next(r for r in grid["single"] if r["target"] == "RTE")
    for r in (mtl, single):
        assert r["protocol"] == "tl" and r["config"]["protocol"] == "tl"
        assert set(r["passes"]) == set(r["train_sizes"]) == set(r["examples_seen"])
        for t, n in r["train_sizes"].items():
            assert r["passes"][t] == pytest.approx(r["examples_seen"][t] / n)
    assert mtl["passes"]["RTE"] == pytest.approx(single["passes"]["RTE"]) == pytest.approx(1.0)


def test_stilts_continues_from_the_best_support_run(grid):
    (stilts,) = grid["stilts"]
    assert_complete(stilts, ["RTE"])
    supports = {r["run_id"]: r["score"] for r in grid["single"] if r["target"] == "MRPC"}
    assert sorted(stilts["support_runs"]) == sorted(supports)  # reused, not retrained
    assert stilts["support_selection"] == "max" and stilts["support_run"] == max(supports, key=supports.get)
    assert stilts["support_score"] == max(supports.values())
    assert stilts["head"] == "new"  # RTE's and MRPC's label spaces differ
    assert set(stilts["best"]) == {"RTE"} and stilts["train_sizes"] == {"RTE": 32}  # the target alone
    # the target started from the support's fine-tuned encoder, not from MiniLM
    from safetensors.torch import load_file

    support_best = load_file(str(grid["results"] / stilts["support_run"] / "best" / "model.safetensors"))
    assert stilts["supports"] == ["MRPC"] and len(support_best) > 0


def test_dynamic_weights_follow_the_single_run_references(grid):
    (dyn,) = grid["dynamic"]
    assert_complete(dyn, ["RTE", "MRPC"])
    assert dyn["run_id"] == "mtl__rte+mrpc__dynamic__lim32__s1"
    from tl.runs import read_record

    singles = {t: [read_record(grid["dynamic_results"] / f"single__{t.lower()}__lim32__s{s}") for s in (1, 2)]
               for t in ("RTE", "MRPC")}  # its needs, trained first
    assert all(r["status"] == "complete" and r["config"]["epochs"] == 2 for rs in singles.values() for r in rs)
    refs = {t: np.mean([r["score"] for r in rs]) for t, rs in singles.items()}
    log = [json.loads(x) for x in (grid["dynamic_results"] / dyn["run_id"] / "log.jsonl").read_text().splitlines()]
    assert log[0]["weights"] == pytest.approx({"RTE": 0.5, "MRPC": 0.5})  # first epoch: by size (32, 32)
    # second epoch: proportional to max(reference - current, 0.5), from the first epoch's dev scores
    gaps = {t: max(refs[t] - log[0]["dev"][t]["score"], 0.5) for t in refs}
    assert log[1]["weights"] == pytest.approx({t: g / sum(gaps.values()) for t, g in gaps.items()}, abs=1e-9)


def test_mtl_all_writes_a_record_per_task(grid):
    records = grid["mtl_all"]
    names = [t.name for t in GLUE_TASKS]
    assert [r["target"] for r in records] == names
    for r in records:
        assert_complete(r, names)
        assert r["run_id"] == f"mtl_all__{r['target'].lower().replace('-', '')}__size__lim16__s1"
        assert r["score"] == r["best"][r["target"]]["score"] and r["train_run"] == records[0]["train_run"]
    joint = json.loads((grid["results"] / records[0]["train_run"] / "record.json").read_text())
    assert joint["role"] == "train" and len(joint["per_task"]) == 9
    assert sum(joint["train_sizes"].values()) == 9 * 16
    # MNLI is scored on matched dev and also evaluated on mismatched
    assert "dev_mismatched_accuracy" in joint["best"]["MNLI"]


def test_statistics_read_the_recipes_records(grid):
    """The records feed tools/stats.py's table: stilts and mtl rows for (RTE, MRPC); mtl_all rows
    once per task, never the joint run; every row under tl's protocol."""
    from tl.study.scores import read_run_records

    rows = read_run_records(grid["results"])
    methods = {(r.target, r.support, r.method) for r in rows}
    assert {("RTE", "MRPC", "stilts"), ("RTE", "MRPC", "mtl:size")} <= methods
    assert sorted(r.target for r in rows if r.method == "mtl_all:size") == sorted(t.name for t in GLUE_TASKS)
    assert sum(1 for r in rows if r.method == "single") == 4
    assert {r.protocol for r in rows} == {"tl"}


def test_complete_runs_are_skipped(grid, capsys):
    from tl.recipes import RunConfig
    from tl.study.jobs import run

    again = run(RunConfig(mode="mtl", tasks=("rte", "mrpc"), seeds=(1,), **grid["cfg"]), grid["settings"])
    assert again[0]["score"] == grid["mtl"][0]["score"]
    assert "(skipped)" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# the authors' protocol end to end: quota epochs, a pair trained once, STILTs carrying its head


@pytest.fixture(scope="module")
def authors(tmp_path_factory, minilm_path):
    """An authors-protocol pair RTE (limited to its first 150 rows) + WNLI (256 rows), asked as
    rte,wnli then as wnli,rte; and an authors single run of MRPC to continue from."""
    import shutil

    from tl.recipes import RunConfig
    from tl.study.jobs import run

    base = tmp_path_factory.mktemp("authors")
    data = base / "data"
    for task in ("RTE", "WNLI"):
        shutil.copytree(SAMPLES / task, data / task)
    lines = (SAMPLES / "RTE" / "train.tsv").read_text().splitlines(keepends=True)
    (data / "RTE" / "train.tsv").write_text("".join(lines[:151]))  # header + 150 rows
    common = dict(model=str(minilm_path), data_dir=str(data), results_dir=str(base / "results"),
                  cache_dir=str(base / "cache"), device="cpu", max_len=64, seeds=(1,))
    settings = TrainSettings(protocol="authors", epochs=2, batch_size=128, lr=1e-4, evals_per_epoch=1,
                             eval_batch_size=128, progress=False)  # --sampler auto: uniform for a pair
    out = {"results": base / "results", "common": common, "settings": settings}
    out["pair"] = run(RunConfig(mode="mtl", tasks=("rte", "wnli"), **common), settings)
    out["again"] = run(RunConfig(mode="mtl", tasks=("wnli", "rte"), **common), settings)
    single = dict(common, data_dir=str(SAMPLES), limit_train=32)
    out["support"] = run(RunConfig(mode="single", tasks=("mrpc",), **single),
                         replace(settings, epochs=1, batch_size=16))
    out["single_cfg"] = single
    return out


def test_authors_epoch_follows_their_quotas(authors):
    """Uniform quotas 64/64 of a batch of 128; m = min(floor(150/64), floor(256/64)) = 2 groups, so
    each epoch takes 64 * 2 = 128 rows of each task (2 batches); 2 epochs: 256 rows of each."""
    rte, wnli = authors["pair"]
    assert rte["run_id"] == "authors__mtl__rte+wnli__uniform__s1" and rte["target"] == "RTE"
    assert rte["protocol"] == "authors" and rte["sampler"] == "uniform" and rte["config"]["protocol"] == "authors"
    assert rte["train_sizes"] == {"RTE": 150, "WNLI": 256}
    m = min(150 // 64, 256 // 64)
    assert rte["examples_seen"] == {"RTE": 64 * m * 2, "WNLI": 64 * m * 2} == {"RTE": 256, "WNLI": 256}
    assert rte["passes"] == pytest.approx({"RTE": 256 / 150, "WNLI": 1.0})
    assert rte["steps"] == 2 * (2 * 64 * m) // 128
    # one run, both targets' records: WNLI's is read from RTE's run at WNLI's own best checkpoint
    assert wnli["run_id"] == "authors__mtl__wnli+rte__uniform__s1" and wnli["train_run"] == rte["run_id"]
    assert wnli["target"] == "WNLI" and wnli["supports"] == ["RTE"] and wnli["best"] == rte["best"]
    assert wnli["score"] == rte["best"]["WNLI"]["score"] and wnli["examples_seen"] == rte["examples_seen"]
    from tl.runs import complete_records

    on_disk = {r["run_id"]: r for r in complete_records(authors["results"])}
    assert on_disk[wnli["run_id"]]["score"] == wnli["score"] and on_disk[rte["run_id"]]["score"] == rte["score"]
    assert not (authors["results"] / wnli["run_id"] / "log.jsonl").exists()  # trained once, in RTE's folder
    # asked later as wnli,rte: the same run, found complete; the asked target first
    assert [r["run_id"] for r in authors["again"]] == [wnli["run_id"], rte["run_id"]]
    assert [r["score"] for r in authors["again"]] == [wnli["score"], rte["score"]]


def test_authors_stilts_carries_the_supports_head(authors):
    """RTE and MRPC both have two labels: under authors the target's head at step 0 is the support's
    trained `classifier` (equal tensors); under tl (other label strings) it is new."""
    from safetensors.torch import load_file

    from tl.recipes import RunConfig, carries_head, plan
    from tl.study.jobs import Context, start_model

    (support,) = authors["support"]
    assert support["run_id"] == "authors__single__mrpc__lim32__s1" and support["protocol"] == "authors"
    cfg = RunConfig(mode="stilts", tasks=("rte", "mrpc"), support_seeds=(1,), **authors["single_cfg"])
    ctx = Context(cfg, "authors")
    assert ctx.tokenizer.lowercase  # their --do_lower_case
    job = plan(cfg, authors["settings"], ctx.train_size)[-1]
    assert job.needs == (support["run_id"],)
    model, extra = start_model(ctx, job, ["RTE"])
    assert model.head_key(0) == "classifier" and extra["head"] == "reused" and extra["support_run"] == support["run_id"]
    saved = load_file(str(authors["results"] / support["run_id"] / "best" / "heads.safetensors"))
    head = model.heads["classifier"].state_dict()
    assert head and all(torch.equal(v, saved[f"classifier.{k}"]) for k, v in head.items())
    fresh = MultiTaskModel(Encoder.from_pretrained(ctx.model_dir), [HeadSpec("RTE", 2)], share="label_count")
    assert not all(torch.equal(v, fresh.heads["classifier"].state_dict()[k]) for k, v in head.items())  # it trained
    assert not carries_head("RTE", "MRPC", "tl") and carries_head("RTE", "QNLI", "tl")
    assert not carries_head("RTE", "MNLI", "authors") and not carries_head("STS-B", "RTE", "authors")


# ---------------------------------------------------------------------------------------------
# a killed multi-task run


def tiny_model_dir(tmp_path: Path, minilm_path: Path) -> Path:
    """A small random BERT with MiniLM's real tokenizer: fast enough to train in a test."""
    from tl.tokenizer import Tokenizer

    torch.manual_seed(0)
    folder = tmp_path / "tiny-bert"
    Encoder(tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)).save_pretrained(folder)
    Tokenizer.from_checkpoint(minilm_path).save(folder)
    return folder


def train_cmd(*args) -> list:
    return [sys.executable, str(ROOT / "tools" / "train.py"), "--data-dir", str(SAMPLES), "--no-progress", *args]


@pytest.mark.parametrize("protocol, rid", [
    ("tl", "mtl__rte+mrpc__dynamic__lim48__s3"),
    # the authors' rules: their softmax variant, quotas recomputed each epoch, the pair in their order
    ("authors", "authors__mtl__mrpc+rte__dynamic-softmax__lim48__s3"),
])
def test_killed_mtl_run_resumes_identically(tmp_path, minilm_path, protocol, rid):
    """Dynamic sampling (weights change at each epoch) with heterogeneous batches, killed with SIGKILL
    in its third epoch and started again: the same log, scores and parameters as an uninterrupted run."""
    model = tiny_model_dir(tmp_path, minilm_path)
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"rte": 70.0, "mrpc": 80.0}))
    env = {**os.environ, "TL_CACHE": str(tmp_path / "cache")}
    common = ["--mode", "mtl", "--tasks", "rte,mrpc", "--model", str(model), "--seeds", "3", "--epochs", "5",
              "--batch-size", "16", "--micro-batch", "8", "--lr", "1e-3", "--save-every", "2", "--limit-train", "48", "--keep-checkpoint",
              "--reference-scores", str(refs), "--eval-batch-size", "128", "--protocol", protocol, "--sampler", "dynamic",
              "--device", "cpu"]  # torch.equal below: CUDA's atomics would differ
    # first epoch by size: 48 + 48 rows = 6 steps (tl: one pass over RTE, MRPC in proportion;
    # authors: quotas 8 + 8, floor(48 / 8) = 6 groups); later epochs follow the weights
    whole = tmp_path / "whole"
    subprocess.run(train_cmd(*common, "--results-dir", str(whole)), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(*common, "--results-dir", str(killed)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / rid / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if checkpoint_step(state) >= 14:  # mid third epoch
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    record = json.loads((killed / rid / "record.json").read_text())
    assert record["status"] == "running", "the run ended before it could be killed; make it longer"

    out = subprocess.run(train_cmd(*common, "--results-dir", str(killed)), check=True, env=env, capture_output=True,
                         text=True)
    assert "resuming" in out.stdout
    a, b = (json.loads((d / rid / "record.json").read_text()) for d in (whole, killed))
    assert a["status"] == b["status"] == "complete" and a["best"] == b["best"] and a["score"] == b["score"]
    logs = [[json.loads(x) for x in (d / rid / "log.jsonl").read_text().splitlines()] for d in (whole, killed)]
    assert len(logs[0]) == 10 and logs[0] == logs[1]
    assert len({json.dumps(e["weights"], sort_keys=True) for e in logs[0]}) > 1  # the weights did change
    from safetensors.torch import load_file

    pa, pb = (load_file(str(d / rid / "checkpoint" / "model.safetensors")) for d in (whole, killed))
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


# ---------------------------------------------------------------------------------------------
# bad input, before any training


@pytest.mark.parametrize("args, message", [
    (["--mode", "stilts", "--tasks", "rte"], "needs a target and a support"),
    (["--mode", "stilts", "--tasks", "rte,rte"], "the target cannot be its own support"),
    (["--mode", "stilts", "--tasks", "rte,mrpc,sst2"], "exactly one support"),
    (["--mode", "mtl", "--tasks", "rte,mrpc", "--schedule", "nosuch"], "--schedule must be one of"),
    (["--mode", "mtl", "--tasks", "rte,mrpc", "--support-size", "lots"], "--support-size"),
    (["--mode", "stilts", "--tasks", "rte,mrpc", "--support-selection", "best"], "--support-selection"),
])
def test_bad_recipe_flags(args, message):
    out = subprocess.run(train_cmd(*args), capture_output=True, text=True)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr


def test_dynamic_trains_its_reference_runs_first(tmp_path, minilm_path):
    """Dynamic sampling's references are the single runs over --support-seeds: listed, then trained
    before the multi-task run (never silently, never missing)."""
    model = tiny_model_dir(tmp_path, minilm_path)
    env = {**os.environ, "TL_CACHE": str(tmp_path / "cache")}
    results = tmp_path / "r"
    out = subprocess.run(train_cmd("--mode", "mtl_all", "--tasks", "rte,mrpc,cola", "--model", str(model),
                                   "--results-dir", str(results), "--seeds", "1", "--support-seeds", "4",
                                   "--limit-train", "16", "--epochs", "1", "--batch-size", "16"),
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    singles = [f"single__{t}__lim16__s4" for t in ("rte", "mrpc", "cola")]
    announced = next(x for x in out.stdout.splitlines() if "build on 3 single runs" in x)
    assert "--support-seeds 4" in announced and all(s in announced for s in singles)
    assert out.stdout.index(announced) < out.stdout.index(singles[0] + ": score")  # listed before trained
    from tl.runs import read_record

    for s in singles:
        record = read_record(results / s)
        assert record["status"] == "complete" and record["protocol"] == "tl"
    for t in ("rte", "mrpc", "cola"):
        assert read_record(results / f"mtl_all__{t}__dynamic__lim16__s1")["status"] == "complete"


