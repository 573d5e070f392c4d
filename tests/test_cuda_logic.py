"""The CUDA path's decisions, checked on CPU with fakes (issue 19): which device and backend a run takes
(tools/train.py `choose_device`), which precision "auto" means on a GPU, what fp16 does with
non-finite gradients, resuming across machines (fewer GPUs, another precision, no scaler),
the DDP all-reduce's buffers, CUDA's padding to a multiple of 8 tokens and its clock.

Nothing here needs a GPU: torch.cuda's answers are faked with monkeypatch, and the real GPU runs of
these paths are in test_cuda.py and tools/gpu_check.sh.
"""
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tl import train
from tl.data import collate
from tl.heads import HeadSpec, MultiTaskModel
from tl.model import Encoder, EncoderConfig
from tl.tasks import get_task
from tl.train import LoopState, TaskData, TrainSettings, fit
from helpers import random_split

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("train_tool_cuda_logic", ROOT / "tools" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_gpus(monkeypatch, count: int, capability=(8, 0)) -> list:
    """torch.cuda as on a host with `count` GPUs of `capability`; returns the devices asked about."""
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: asked.append(device) or capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation counts: must not be asked
    return asked


TORCHRUN2 = {"LOCAL_RANK": "1", "RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}


@pytest.mark.parametrize("flag, env, gpus, expected", [
    ("", {}, 0, ("cpu", None)),
    ("", {}, 1, ("cuda", None)),
    ("cuda:1", {}, 2, ("cuda:1", None)),
    ("", TORCHRUN2, 0, ("cpu", "gloo")),
    ("cpu", TORCHRUN2, 2, ("cpu", "gloo")),  # the gloo tests on a GPU machine
    ("", TORCHRUN2, 2, ("cuda:1", "nccl")),
    ("cuda", TORCHRUN2, 4, ("cuda:1", "nccl")),
    ("", {"LOCAL_RANK": "0", "WORLD_SIZE": "1"}, 1, ("cuda", None)),  # torchrun with one process
    ("", TORCHRUN2, 1, "--nproc_per_node 1, or --device cpu"),  # rank 1 would crash: invalid device ordinal
    ("cuda", {}, 0, "--device cuda: no CUDA device"),
    ("gpu0", {}, 1, "--device gpu0: expected cpu, cuda or cuda:N"),
    ("cpu:0", {}, 1, "--device cpu:0: expected"),
    ("cuda:2", {}, 2, "--device cuda:2: 2 CUDA device(s)"),
    ("cuda:0", TORCHRUN2, 2, "--device cuda:0: under torchrun"),
])
def test_choose_device(tool, flag, env, gpus, expected):
    if isinstance(expected, tuple):
        assert tool.choose_device(flag, env, gpus) == expected
    else:
        with pytest.raises(ValueError) as error:
            tool.choose_device(flag, env, gpus)
        assert expected in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("gpus, env, args, message", [
    (0, {}, ["--device", "cuda"], "--device cuda"),
    (1, {}, ["--device", "gpu0"], "--device gpu0"),
    (1, TORCHRUN2, [], "--nproc_per_node 1"),
])
def test_train_tool_refuses_a_device_in_one_line(tool, tmp_path, minilm_path, monkeypatch, capsys, gpus, env, args,
                                                 message):
    """Exit 2 and one line before any process group, model or file: no traceback, no hung rank."""
    fake_gpus(monkeypatch, gpus)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    results = tmp_path / "results"
    assert tool.main(["--mode", "single", "--tasks", "rte", "--model", str(minilm_path), "--results-dir", str(results),
                      *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not results.exists() and not torch.distributed.is_initialized()


@pytest.mark.parametrize("capability, expected", [((7, 0), torch.float16), ((7, 5), torch.float16),
                                                  ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_precision_is_bf16_only_where_the_runs_gpu_has_it(monkeypatch, capability, expected):
    """V100 (7.0) and T4 (7.5) emulate bf16: fp16 there; A100 (8.0) and H100 (9.0): bf16. The run's GPU is
    asked, not the current one."""
    asked = fake_gpus(monkeypatch, 2, capability)
    assert train.resolve_precision("auto", torch.device("cuda:1")) == expected
    assert asked == [torch.device("cuda:1")]
    assert train.resolve_precision("auto", torch.device("cpu")) == torch.float32
    assert train.resolve_precision("fp16", torch.device("cpu")) == torch.float16


# ---------------------------------------------------------------------------------------------
# fp16: skipped steps


def tiny_config(**kw) -> EncoderConfig:
    base = dict(model_type="bert", vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                intermediate_size=64, hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)
    return EncoderConfig(**{**base, **kw})


def tiny_task() -> list:
    rng = np.random.default_rng(0)
    return [TaskData(spec=get_task("RTE"), train=random_split(32, rng), dev={"dev": random_split(8, rng)})]


def tiny_model() -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel(Encoder(tiny_config()), [HeadSpec("RTE", 2)])


class ScriptedScaler:
    """A GradScaler whose unscale finds non-finite gradients on the steps listed in `overflow` (counting
    every call of `step`, retries too): it then skips the optimizer step and halves its scale, as torch's."""

    def __init__(self, overflow=()):
        self.calls, self.overflow, self.scale_, self.found = 0, set(overflow), 2.0 ** 16, False

    def is_enabled(self):
        return True

    def scale(self, loss):
        return loss

    def unscale_(self, optimizer):
        self.found = self.calls in self.overflow

    def step(self, optimizer):
        if not self.found:
            optimizer.step()

    def update(self):
        self.scale_, self.calls = self.scale_ / 2 if self.found else self.scale_, self.calls + 1

    def get_scale(self):
        return self.scale_

    def state_dict(self):
        return {"scale": self.scale_}


def test_an_fp16_overflow_is_retried_and_the_schedule_waits(tmp_path, monkeypatch):
    """Steps 2 and 3's first tries overflow: each batch is tried again (at half the scale), so the run
    ends with the parameters, history and steps of a run without overflows (no batch lost, no learning
    rate spent on a step that did not happen)."""
    settings = TrainSettings(batch_size=8, max_steps=4, evals_per_epoch=2, lr=1e-3, progress=False)
    runs = {}
    for name, overflow in (("clean", ()), ("overflows", (1, 3))):
        scaler = ScriptedScaler(overflow)
        monkeypatch.setattr(torch.amp, "GradScaler", lambda *a, **k: scaler)
        model = tiny_model()
        runs[name] = model, fit(model, tiny_task(), settings, tmp_path / name), scaler
    (clean, a, _), (retried, b, scaler) = runs["clean"], runs["overflows"]
    assert scaler.calls == 6 and scaler.scale_ == 2.0 ** 14
    assert a["steps"] == b["steps"] == 4 and a["history"] == b["history"] and a["examples_seen"] == b["examples_seen"]
    for (key, p), q in zip(clean.named_parameters(), retried.parameters()):
        assert torch.equal(p, q), key


def test_fp16_with_nan_parameters_stops_in_one_line(tmp_path):
    """Real fp16 autocast and GradScaler on CPU: NaN parameters make every step overflow; the scale halves
    from 2^16 and the run stops once it is down to 1, instead of skipping forever."""
    model = tiny_model()
    with torch.no_grad():
        model.heads[model.head_key(0)].classifier.weight[0, 0] = float("nan")
    settings = TrainSettings(batch_size=8, max_steps=40, precision="fp16", progress=False)
    with pytest.raises(FloatingPointError) as error:
        fit(model, tiny_task(), settings, tmp_path / "nan")
    message = str(error.value)
    assert "\n" not in message and message.startswith("17 steps in a row skipped") and "loss scale 1" in message
    assert not (tmp_path / "nan" / "log.jsonl").exists()  # no step counted, nothing evaluated


# ---------------------------------------------------------------------------------------------
# resume across machines


def checkpoint(tmp_path: Path, settings: TrainSettings, scaler=None) -> tuple:
    model = tiny_model()
    optimizer = train.make_optimizer(model, settings, torch.device("cpu"))
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
    train.save_checkpoint(tmp_path, model, optimizer, scaler, LoopState(step=3), settings)
    return model, optimizer


def test_resume_refuses_another_precision_under_auto(tmp_path, monkeypatch):
    """A CPU run (auto: fp32) resumed where auto means bf16 would switch precision mid-run: refused in one
    line; the same run resumed in fp32 goes on."""
    settings = TrainSettings(batch_size=8, max_steps=5, progress=False)
    model, optimizer = checkpoint(tmp_path, settings)
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["precision"] == "fp32"
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    monkeypatch.setattr(train, "resolve_precision", lambda p, d: torch.bfloat16)  # auto on an A100
    with pytest.raises(ValueError) as error:
        train.resume(tmp_path, model, optimizer, scaler, settings)
    message = str(error.value)
    assert "\n" not in message and "trained in fp32" in message and "gives bf16" in message
    assert "--device cpu" in message
    monkeypatch.setattr(train, "resolve_precision", lambda p, d: torch.float32)
    assert train.resume(tmp_path, model, optimizer, scaler, settings).step == 3


def test_resume_without_a_saved_scaler_in_fp16(tmp_path, monkeypatch):
    """A checkpoint saved without a gradient scaler (before tl recorded the precision: auto on CPU)
    resumed where auto means fp16 (a T4) starts a fresh scaler instead of failing to load an empty one."""
    settings = TrainSettings(batch_size=8, max_steps=5, progress=False)
    model, optimizer = checkpoint(tmp_path, settings)
    state = tmp_path / "checkpoint" / "state.json"
    state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "precision"}))
    monkeypatch.setattr(train, "resolve_precision", lambda p, d: torch.float16)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    assert train.resume(tmp_path, model, optimizer, scaler, settings).step == 3
    assert scaler.get_scale() == 2.0 ** 16


def test_rng_restore_with_fewer_gpus_than_at_save(monkeypatch):
    """Saved on 2 GPUs, resumed where 1 is visible: that one's state is restored, with one warning line."""
    fake_gpus(monkeypatch, 1)
    restored = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append((state, device)))
    assert "cuda" not in train._rng_state()  # CUDA not initialised: a CPU run on a GPU host leaves it alone
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.zeros(16, dtype=torch.uint8)])
    state = train._rng_state()
    assert len(state["cuda"]) == 1
    cuda = [torch.full((16,), i, dtype=torch.uint8) for i in range(2)]
    with pytest.warns(UserWarning, match="CUDA RNG states of 2 GPUs, 1 visible") as caught:
        train._set_rng_state({**state, "cuda": cuda})
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert len(restored) == 1 and restored[0][1] == 0 and torch.equal(restored[0][0], cuda[0])


# ---------------------------------------------------------------------------------------------
# DDP's buffers, CUDA's padding and clock, compile's limit


def test_allreduce_grads_keeps_no_view_of_its_flat_buffer(monkeypatch):
    """The summed loss and the gradients own their memory: the flat buffer (a copy of every gradient)
    is freed before the optimizer step, not kept alive by a view of its last element."""
    monkeypatch.setattr(train.dist, "all_reduce", lambda tensor: None)  # one rank: the sum is the tensor
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    model(torch.randn(3, 8))[:, 0].sum().backward()
    model[1].weight.grad = None  # a head no rank used keeps no gradient
    expected = {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()}
    loss = train.allreduce_grads(model, torch.tensor(2.5))
    assert float(loss) == 2.5 and loss.untyped_storage().nbytes() == loss.element_size()
    for key, p in model.named_parameters():
        if expected[key] is None:
            assert p.grad is None, key
        else:
            assert torch.equal(p.grad, expected[key]) and p.grad.untyped_storage().nbytes() == p.grad.nbytes, key


def test_cuda_batches_are_padded_to_a_multiple_of_8_without_changing_the_encoding():
    rng = np.random.default_rng(1)
    split = random_split(5, rng)
    rows = np.arange(5)
    plain = collate([split], np.zeros(5, dtype=np.int64), rows, 0)
    padded = collate([split], np.zeros(5, dtype=np.int64), rows, 0, train.pad_multiple(torch.device("cuda")))
    T = plain["input_ids"].shape[1]
    assert train.pad_multiple(torch.device("cpu")) == 1 and T % 8  # the CPU path is unchanged
    assert padded["input_ids"].shape[1] == -(-T // 8) * 8
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(padded[key][:, :T], plain[key]) and not padded[key][:, T:].any(), key
    encoder = Encoder(tiny_config(num_hidden_layers=2)).eval()
    with torch.no_grad():
        a = encoder(plain["input_ids"], plain["attention_mask"], plain["token_type_ids"])
        b = encoder(padded["input_ids"], padded["attention_mask"], padded["token_type_ids"])
    torch.testing.assert_close(b[:, :T], a, atol=1e-6, rtol=0)


def test_clock_waits_for_cuda_only(monkeypatch):
    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    train.clock(torch.device("cpu"))
    assert waited == []
    train.clock(torch.device("cuda:1"))
    assert waited == [torch.device("cuda:1")]


def test_compile_raises_dynamos_recompile_limit(monkeypatch):
    """(padded or not) x (train or eval) x (one row or more): 8 graphs of one layer code, dynamo's default
    limit, past which it would run the layers eager without a word."""
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(kw))  # inductor: slow
    # dynamo's own patch, not monkeypatch: monkeypatch's undo leaves the setting hidden ("does not exist")
    # for every later test in the process, which broke test_compile on a worker that ran both files
    before = torch._dynamo.config.recompile_limit
    with torch._dynamo.config.patch(recompile_limit=8):
        train.setup_model(tiny_model(), replace(TrainSettings(progress=False), compile=True), torch.device("cpu"))
        assert compiled == [{"dynamic": True}] and torch._dynamo.config.recompile_limit >= 32
    assert torch._dynamo.config.recompile_limit == before  # restored, and still readable


def test_gpu_check_commands_are_valid(tool, tmp_path, minilm_path):
    """tools/gpu_check.sh's dry run (as on 2 GPUs): every step, in order, and flags that the tools accept,
    so that the first GPU session does not spend its minutes on a typo."""
    env = {**os.environ, "GPU_CHECK_DRY": "1", "TL_MINILM": str(minilm_path), "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), str(tmp_path / "gpu.json")], env=env,
                         capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
    steps = {line.split(" (")[0]: shlex.split(line.split(": ", 1)[1]) for line in out}
    assert list(steps) == ["tests", "bf16", "fp16", "cpu", "compile", "ddp", "bench_minilm", "bench_distilroberta"]
    for name in ("bf16", "fp16", "cpu", "compile", "ddp"):
        argv = steps[name][steps[name].index("tools/train.py") + 1:]
        cfg, settings = tool.parse(argv)
        assert (cfg.device, settings.precision) == {"cpu": ("cpu", "fp32"), "fp16": ("cuda", "fp16")}.get(
            name, ("cuda", "bf16")), name
        assert settings.compile == (name == "compile")
    assert steps["ddp"][steps["ddp"].index("--nproc_per_node") + 1] == "2"
    bench_flags = set(re.findall(r'add_argument\("(--[a-z-]+)"', (ROOT / "tools" / "bench_train.py").read_text()))
    for name in ("bench_minilm", "bench_distilroberta"):
        assert {a for a in steps[name] if a.startswith("--")} <= bench_flags, name
    for test in (t for t in steps["tests"] if t.startswith("tests/")):  # files, or file::function
        path, _, function = test.partition("::")
        assert f"def {function or 'test_'}" in (ROOT / path).read_text(), test
