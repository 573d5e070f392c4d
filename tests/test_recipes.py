"""The transfer methods end to end: mixed-batch gradients, the recipes on real samples with MiniLM,
dynamic sampling from single runs, a killed multi-task run, bad input."""
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
from tl.train import TrainSettings, collate_rows

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"


def tiny_config(**kw) -> EncoderConfig:
    base = dict(model_type="bert", vocab_size=30522, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)
    base.update(kw)
    return EncoderConfig(**base)


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

    total, n = model.loss_sum(collate_rows(splits, task_ids, example_ids, pad_id=tok.pad_id))
    assert n == N
    mixed = grads(total / N)

    expected = {k: torch.zeros_like(v) for k, v in mixed.items()}
    for t in range(3):
        rows = task_ids == t
        sub = collate_rows(splits, task_ids[rows], example_ids[rows], pad_id=tok.pad_id)
        assert sub["input_ids"].shape[1] <= collate_rows(splits, task_ids, example_ids, tok.pad_id)["input_ids"].shape[1]
        sub_total, n_t = model.loss_sum(sub)
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
    from tl.recipes import RunConfig, run

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
    from dataclasses import replace

    out["dynamic"] = run(RunConfig(mode="mtl", tasks=("rte", "mrpc"), seeds=(1,), **common),
                         replace(settings, sampler="dynamic", epochs=2))  # weights change at epoch 2
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
    # an epoch of a multi-task run is the sum of the tasks' sizes: 64 examples = 4 steps of 16
    log = [json.loads(x) for x in (grid["results"] / mtl["run_id"] / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [4]
    assert (grid["results"] / mtl["run_id"] / "best" / "model.safetensors").exists()
    assert not list((grid["results"] / mtl["run_id"]).glob("checkpoint*"))  # the resume state went at the end


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
    refs = {t: np.mean([r["score"] for r in grid["single"] if r["target"] == t]) for t in ("RTE", "MRPC")}
    log = [json.loads(x) for x in (grid["results"] / dyn["run_id"] / "log.jsonl").read_text().splitlines()]
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
    once per task, never the joint run."""
    from tl.scores import read_run_records

    rows, not_complete = read_run_records(grid["results"])
    assert not_complete == 0
    methods = {(r.target, r.support, r.method) for r in rows}
    assert {("RTE", "MRPC", "stilts"), ("RTE", "MRPC", "mtl:size"), ("RTE", "MRPC", "mtl")} <= methods
    assert sorted(r.target for r in rows if r.method == "mtl_all:size") == sorted(t.name for t in GLUE_TASKS)
    assert sum(1 for r in rows if r.method == "single") == 4


def test_complete_runs_are_skipped(grid, capsys):
    from tl.recipes import RunConfig, run

    again = run(RunConfig(mode="mtl", tasks=("rte", "mrpc"), seeds=(1,), **grid["cfg"]), grid["settings"])
    assert again[0]["score"] == grid["mtl"][0]["score"]
    assert "(skipped)" in capsys.readouterr().out


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


def test_killed_mtl_run_resumes_identically(tmp_path, minilm_path):
    """Dynamic sampling (weights change at each epoch) with heterogeneous batches, killed with SIGKILL
    in its third epoch and started again: the same log, scores and parameters as an uninterrupted run."""
    model = tiny_model_dir(tmp_path, minilm_path)
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"rte": 70.0, "mrpc": 80.0}))
    env = {**os.environ, "TL_CACHE": str(tmp_path / "cache")}
    common = ["--mode", "mtl", "--tasks", "rte,mrpc", "--model", str(model), "--seeds", "3", "--epochs", "5",
              "--batch-size", "16", "--micro-batch", "8", "--lr", "1e-3", "--save-every", "2", "--limit-train", "48", "--keep-checkpoint",
              "--reference-scores", str(refs), "--eval-batch-size", "128"]
    rid = "mtl__rte+mrpc__dynamic__lim48__s3"  # 96 examples per epoch = 6 steps; 30 steps
    whole = tmp_path / "whole"
    subprocess.run(train_cmd(*common, "--results-dir", str(whole)), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(*common, "--results-dir", str(killed)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / rid / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["step"] >= 14:  # mid third epoch
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


def test_dynamic_without_references_names_the_commands(tmp_path, minilm_path):
    model = tiny_model_dir(tmp_path, minilm_path)
    env = {**os.environ, "TL_CACHE": str(tmp_path / "cache")}
    out = subprocess.run(train_cmd("--mode", "mtl_all", "--tasks", "rte,mrpc,cola", "--model", str(model),
                                   "--results-dir", str(tmp_path / "r"), "--seeds", "1", "--limit-train", "16"),
                         env=env, capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    for t in ("rte", "mrpc", "cola"):
        assert f"--mode single --tasks {t} " in out.stderr
    assert "--limit-train 16" in out.stderr and not (tmp_path / "r" / "mtl_all__rte+mrpc+cola__dynamic__lim16__s1").exists()
