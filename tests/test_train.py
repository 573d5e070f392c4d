"""The training engine: accumulation invariance, kill-and-resume, real learning, bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tl.data import TokenizedSplit
from tl.heads import HeadSpec, MultiTaskModel
from tl.model import Encoder, EncoderConfig
from tl.tasks import get_task
from tl.train import TaskData, TrainSettings, clipped_step, fit

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**kw) -> EncoderConfig:
    base = dict(model_type="bert", vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)
    base.update(kw)
    return EncoderConfig(**base)


def random_split(n: int, rng: np.random.Generator, num_labels: int = 2, regression: bool = False) -> TokenizedSplit:
    """n examples of unequal lengths (3..20 tokens) with random ids and labels."""
    lengths = rng.integers(3, 21, size=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = rng.integers(1, 64, size=offsets[-1]).astype(np.int32)
    types = np.zeros_like(ids)
    labels = rng.normal(size=n).astype(np.float32) if regression else rng.integers(0, num_labels, size=n)
    return TokenizedSplit(ids=ids, type_ids=types, offsets=offsets, lengths=lengths.astype(np.int32), labels=labels)


def tiny_run(tmp_path: Path, settings: TrainSettings, name: str, tasks=("RTE",)):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = []
    for t in tasks:
        spec = get_task(t)
        data.append(TaskData(spec=spec, train=random_split(24, rng, regression=spec.is_regression),
                             dev={"dev": random_split(8, rng, regression=spec.is_regression)}))
    heads = [HeadSpec(d.spec.name, 1 if d.spec.is_regression else d.spec.num_labels, d.spec.is_regression) for d in data]
    model = MultiTaskModel(Encoder(tiny_config()), heads)
    summary = fit(model, data, settings, tmp_path / name)
    return model, summary


@pytest.mark.parametrize("tasks", [("RTE",), ("RTE", "STS-B")])
def test_accumulation_changes_nothing(tmp_path, tasks):
    """(batch 8, micro 8) and (batch 8, micro 2): same loss and parameters after 3 steps, <= 1e-6."""
    base = TrainSettings(batch_size=8, micro_batch=8, max_steps=3, lr=1e-3, progress=False, sampler="size", seed=3)
    a, sa = tiny_run(tmp_path, base, "whole", tasks)
    b, sb = tiny_run(tmp_path, replace(base, micro_batch=2), "micro", tasks)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=name)
    assert sa["history"][-1]["train_loss"] == pytest.approx(sb["history"][-1]["train_loss"], abs=1e-6)
    # and the training did move the weights
    c = MultiTaskModel(Encoder(tiny_config()), [HeadSpec("RTE", 2)])
    assert not torch.allclose(a.encoder.embeddings.word_embeddings.weight, c.encoder.embeddings.word_embeddings.weight)


def test_timing_keeps_the_first_step_apart(tmp_path):
    """summary["timing"]: the steady-state figures leave out the call's first step (one-time costs)."""
    _, summary = tiny_run(tmp_path, TrainSettings(batch_size=8, max_steps=3, progress=False, sampler="size"), "t")
    timing = summary["timing"]
    assert timing["steady_examples"] == 16  # 3 steps of 8, the first left out
    assert 0 < timing["steady_seconds"] < timing["train_seconds"]
    total_tokens = timing["tokens_per_second"] * timing["train_seconds"]
    assert 0 < timing["steady_tokens"] < total_tokens


def test_bf16_autocast_runs_on_cpu(tmp_path):
    _, summary = tiny_run(tmp_path, TrainSettings(batch_size=8, max_steps=2, precision="bf16", progress=False), "bf16")
    assert summary["steps"] == 2
    assert np.isfinite(summary["history"][-1]["train_loss"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_amp(tmp_path, precision):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    spec = get_task("RTE")
    data = [TaskData(spec=spec, train=random_split(64, rng), dev={"dev": random_split(16, rng)})]
    model = MultiTaskModel(Encoder(tiny_config()), [HeadSpec("RTE", 2)])
    summary = fit(model, data, TrainSettings(batch_size=16, max_steps=8, precision=precision, progress=False),
                  tmp_path / precision, device="cuda")
    assert summary["steps"] == 8 and np.isfinite(summary["history"][-1]["train_loss"])


def _clip_run(max_norm: float, fused: bool, ours: bool, steps: int = 4):
    """A few AdamW steps of a small embedding + MLP model, clipped by `clipped_step` or by
    clip_grad_norm_ + step; returns the parameters and the norms."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(50, 16), torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0, fused=fused, foreach=not fused)
    norms = []
    for step in range(steps):
        x = torch.randint(0, 50, (8, 5), generator=torch.Generator().manual_seed(step))
        (model(x).pow(2).mean() * 50).backward()
        if ours:
            norms.append(clipped_step(optimizer, model.parameters(), max_norm))
        else:
            norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert not hasattr(optimizer, "grad_scale")  # nothing left behind for a GradScaler to trip on
    return [p.detach().clone() for p in model.parameters()], torch.stack(norms)


@pytest.mark.parametrize("fused", [True, False])
def test_clipped_step_is_clip_then_step(fused):
    """Against clip_grad_norm_ + step: bit-identical when nothing is clipped (max_norm far above the
    gradient norms, ~10 here), equal to float rounding when every step is clipped (max_norm 0.1)."""
    for max_norm, tolerance in ((1e9, 0.0), (0.1, 1e-6)):
        ref, ref_norms = _clip_run(max_norm, fused, ours=False)
        got, norms = _clip_run(max_norm, fused, ours=True)
        assert (ref_norms > 1.0).all()
        torch.testing.assert_close(norms, ref_norms, atol=1e-5, rtol=1e-6)
        for p, q in zip(got, ref):
            torch.testing.assert_close(p, q, atol=tolerance, rtol=0)
    unclipped, _ = _clip_run(1e9, fused, ours=True)
    assert not all(torch.allclose(p, q) for p, q in zip(got, unclipped))  # clipping did change the update


KEEP_PROBE = """
import re, sys, torch
sys.path.insert(0, sys.argv[2])
from tl.train import keep_freed_memory
rss = lambda: int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1))  # kB
torch.ones(16 << 20)
print(keep_freed_memory() if sys.argv[1] == "keep" else "-")
drops = []
for _ in range(3):
    x = torch.ones(16 << 20)  # 64 MB, written
    before = rss()
    del x
    drops.append(before - rss())
print(max(drops))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists() or sys.platform != "linux", reason="glibc's malloc on Linux")
def test_keep_freed_memory_keeps_large_blocks():
    """glibc hands a freed 64 MB tensor back to the kernel (the resident size drops by 64 MB, and the
    next one is faulted in anew); after keep_freed_memory it keeps the block for the next allocation."""
    runs = {mode: subprocess.run([sys.executable, "-c", KEEP_PROBE, mode, str(ROOT)], capture_output=True, text=True,
                                 check=True).stdout.split() for mode in ("default", "keep")}
    assert int(runs["default"][1]) >= 60_000  # kB returned on free
    assert runs["keep"][0] == "True" and int(runs["keep"][1]) < 4_000


# ---------------------------------------------------------------------------------------------
# the command line


def tiny_model_dir(tmp_path: Path, minilm_path: Path) -> Path:
    """A small random BERT with MiniLM's real tokenizer: fast enough to train in a test."""
    from tl.tokenizer import Tokenizer

    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=30522, hidden_size=48, max_position_embeddings=512, hidden_dropout_prob=0.1,
                      attention_probs_dropout_prob=0.1)
    folder = tmp_path / "tiny-bert"
    Encoder(cfg).save_pretrained(folder)
    Tokenizer.from_checkpoint(minilm_path).save(folder)
    return folder


def train_cmd(*args) -> list:
    return [sys.executable, str(ROOT / "tools" / "train.py"), "--data-dir", str(ROOT / "data" / "samples"),
            "--no-progress", *args]


def test_kill_and_resume_matches_uninterrupted(tmp_path, minilm_path):
    model = tiny_model_dir(tmp_path, minilm_path)
    env = {**os.environ, "TL_CACHE": str(tmp_path / "cache")}
    common = ["--mode", "single", "--tasks", "rte", "--model", str(model), "--seeds", "7", "--epochs", "6",
              "--batch-size", "16", "--micro-batch", "8", "--lr", "1e-3", "--save-every", "3", "--limit-train", "128",
              "--keep-checkpoint"]
    whole = tmp_path / "whole"
    subprocess.run(train_cmd(*common, "--results-dir", str(whole)), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(*common, "--results-dir", str(killed)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "single__rte__lim128__s7" / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["step"] >= 6:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    record = json.loads((killed / "single__rte__lim128__s7" / "record.json").read_text())
    assert record["status"] == "running", "the run ended before it could be killed; make it longer"
    done = json.loads(state.read_text())["step"]
    assert 0 < done < record["config"]["epochs"] * 8

    out = subprocess.run(train_cmd(*common, "--results-dir", str(killed)), check=True, env=env, capture_output=True, text=True)
    assert "resuming" in out.stdout
    a = json.loads((whole / "single__rte__lim128__s7" / "record.json").read_text())
    b = json.loads((killed / "single__rte__lim128__s7" / "record.json").read_text())
    assert a["status"] == b["status"] == "complete"
    assert a["best"] == b["best"] and a["score"] == b["score"]
    from safetensors.torch import load_file

    pa = load_file(str(whole / "single__rte__lim128__s7" / "checkpoint" / "model.safetensors"))
    pb = load_file(str(killed / "single__rte__lim128__s7" / "checkpoint" / "model.safetensors"))
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    logs = [(d / "single__rte__lim128__s7" / "log.jsonl").read_text().splitlines() for d in (whole, killed)]
    assert [json.loads(x)["dev"] for x in logs[0]] == [json.loads(x)["dev"] for x in logs[1]]


@pytest.mark.parametrize("args, message", [
    (["--mode", "single", "--tasks", "nosuchtask"], "nosuchtask"),
    (["--mode", "single", "--tasks", "rte", "--batch-size", "16", "--micro-batch", "5"], "--micro-batch 5 must divide"),
    (["--mode", "stilts", "--tasks", "rte"], "needs a target and a support"),
    (["--mode", "mtl", "--tasks", "rte,rte"], "twice"),
    (["--mode", "mtl", "--tasks", "rte,mrpc", "--sampler", "nosuch"], "--sampler must be one of"),
])
def test_bad_flags_fail_before_training(args, message):
    out = subprocess.run(train_cmd(*args), capture_output=True, text=True)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr


def test_clashing_run_and_unwritable_results(tmp_path, minilm_path):
    model = tiny_model_dir(tmp_path, minilm_path)
    env = {**os.environ, "TL_CACHE": str(tmp_path / "cache")}
    common = ["--mode", "single", "--tasks", "rte", "--model", str(model), "--seeds", "1", "--max-steps", "1",
              "--batch-size", "8", "--limit-train", "16", "--results-dir", str(tmp_path / "r")]
    subprocess.run(train_cmd(*common), check=True, env=env, capture_output=True)
    out = subprocess.run(train_cmd(*common, "--lr", "1e-3"), env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "holds a run with other settings" in out.stderr and "lr" in out.stderr
    assert "step" not in out.stdout  # nothing trained

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = subprocess.run(train_cmd(*common[:-1], str(blocker / "results")), env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "not writable" in out.stderr

    out = subprocess.run(train_cmd("--mode", "mtl", "--tasks", "rte,mrpc", "--model", str(model),
                                   "--results-dir", str(tmp_path / "r2"), "--seeds", "1"),
                         env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "reference scores" in out.stderr and "--mode single --tasks rte" in out.stderr


# ---------------------------------------------------------------------------------------------
# real learning with the real checkpoint


def _real_run(tmp_path, minilm_path, shared_glue, task: str, limit: int, batch_size: int = 32):
    """Fine-tune all-MiniLM-L6-v2 on `limit` real training examples; returns the best dev metrics.
    Differs from the paper for a short CPU run: batch 32 (16 for STS-B) and lr 1e-4 (the paper: 128
    and 2e-5 for 10 epochs), 2 epochs, one evaluation per epoch."""
    from tl.recipes import RunConfig, run

    cfg = RunConfig(mode="single", tasks=(task,), model=str(minilm_path), data_dir=str(shared_glue),
                    results_dir=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"), seeds=(42,),
                    limit_train=limit)
    settings = TrainSettings(epochs=2, batch_size=batch_size, lr=1e-4, evals_per_epoch=1, progress=False)
    (record,) = run(cfg, settings)
    return record


@pytest.mark.slow
def test_minilm_learns_sst2(tmp_path, minilm_path, shared_glue):
    record = _real_run(tmp_path, minilm_path, shared_glue, "sst2", 2000)
    assert record["status"] == "complete" and record["train_sizes"] == {"SST-2": 2000}
    assert record["best"]["SST-2"]["accuracy"] >= 0.75  # majority class: 0.51


@pytest.mark.slow
def test_minilm_learns_stsb(tmp_path, minilm_path, shared_glue):
    record = _real_run(tmp_path, minilm_path, shared_glue, "stsb", 2000, batch_size=16)
    assert record["best"]["STS-B"]["spearman"] >= 0.75
