"""The CUDA path of tl.train on a real GPU: fused AdamW, pinned-memory non-blocking batch copies, auto
precision, the CUDA RNG in checkpoints, fp16's stop on NaN parameters, `--compile` on batches whose
length is not a multiple of 8.

Skipped without a CUDA device (AMP fp16/bf16 runs are in test_train.py, DDP with NCCL in test_ddp.py;
the same decisions with faked GPUs run on CPU in test_cuda_logic.py). Each test compares against the
CPU path or an eager run, so it checks results, not only that it runs. tools/gpu_check.sh runs these.
"""
from dataclasses import replace

import numpy as np
import pytest
import torch

from tl import train
from tl.data import TokenizedSplit
from tl.heads import HeadSpec, MultiTaskModel
from tl.model import Encoder, EncoderConfig
from tl.tasks import get_task
from tl.train import TaskData, TrainSettings, fit, make_optimizer, to_device

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_fused_adamw_on_cuda_matches_cpu():
    torch.manual_seed(0)
    cpu = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 2))
    gpu = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 2)).cuda()
    gpu.load_state_dict(cpu.state_dict())
    settings = TrainSettings(lr=1e-2, weight_decay=0.01)
    opt_cpu, opt_gpu = make_optimizer(cpu, settings, torch.device("cpu")), make_optimizer(gpu, settings, torch.device("cuda"))
    assert opt_gpu.defaults["fused"] and opt_cpu.defaults["fused"]  # fused on both (make_optimizer)
    for _ in range(3):
        grads = [torch.randn_like(p) for p in cpu.parameters()]
        for p, q, g in zip(cpu.parameters(), gpu.parameters(), grads):
            p.grad, q.grad = g.clone(), g.cuda()
        opt_cpu.step()
        opt_gpu.step()
    for p, q in zip(cpu.parameters(), gpu.parameters()):
        torch.testing.assert_close(q.cpu(), p, atol=1e-6, rtol=1e-5)


def test_to_device_pins_and_copies_non_blocking():
    batch = {"input_ids": torch.randint(0, 100, (4, 9)), "labels": torch.rand(4)}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        moved = to_device(batch, torch.device("cuda"))
        torch.cuda.synchronize()  # non_blocking copies: wait before reading
    ops = {e.key for e in prof.key_averages()}
    assert ops & {"aten::pin_memory", "aten::_pin_memory"}, sorted(ops)
    for k, v in batch.items():
        assert moved[k].is_cuda and torch.equal(moved[k].cpu(), v), k


def test_auto_precision_follows_the_gpus_capability():
    native = torch.cuda.get_device_capability(0) >= (8, 0)
    assert train.resolve_precision("auto", torch.device("cuda:0")) == (torch.bfloat16 if native else torch.float16)


def test_cuda_rng_state_round_trips():
    torch.cuda.manual_seed_all(3)
    torch.rand(1, device="cuda")  # CUDA in use, as in a run on the GPU: its RNG is saved
    state = train._rng_state()
    assert len(state["cuda"]) == torch.cuda.device_count()
    a = torch.rand(4, device="cuda")
    train._set_rng_state(state)
    assert torch.equal(torch.rand(4, device="cuda"), a)


def tiny_data() -> list:
    """RTE-shaped random examples of 3..20 tokens: most batches are not a multiple of 8 long."""
    rng = np.random.default_rng(0)
    splits = []
    for n in (40, 17):
        lengths = rng.integers(3, 21, size=n)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = rng.integers(1, 64, size=offsets[-1]).astype(np.int32)
        splits.append(TokenizedSplit(ids=ids, type_ids=np.zeros_like(ids), offsets=offsets,
                                     lengths=lengths.astype(np.int32), labels=rng.integers(0, 2, size=n)))
    return [TaskData(spec=get_task("RTE"), train=splits[0], dev={"dev": splits[1]})]


def tiny_model() -> MultiTaskModel:
    torch.manual_seed(0)
    cfg = EncoderConfig(model_type="bert", vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, hidden_act="gelu", hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, max_position_embeddings=64, type_vocab_size=2,
                        layer_norm_eps=1e-12, pad_token_id=0)
    return MultiTaskModel(Encoder(cfg), [HeadSpec("RTE", 2)])


def test_fp16_with_nan_parameters_stops_on_cuda(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.heads[model.head_key(0)].classifier.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="in a row skipped for non-finite gradients"):
        fit(model, tiny_data(), TrainSettings(batch_size=8, max_steps=40, precision="fp16", progress=False),
            tmp_path / "nan", device="cuda")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compile_on_cuda_matches_eager(tmp_path, precision):
    """Compiled attention with a boolean mask failed in Inductor when T was not a multiple of 8 ("attn_bias
    is not correctly aligned"): CUDA batches are padded to a multiple of 8. Train and eval shapes and an
    eval batch of one row (17 = 4 x 4 + 1) run, the losses those of eager."""
    settings = TrainSettings(batch_size=8, max_steps=5, evals_per_epoch=5, eval_batch_size=4, lr=1e-3,
                             precision=precision, progress=False)
    eager = fit(tiny_model(), tiny_data(), settings, tmp_path / "eager", device="cuda")
    compiled = fit(tiny_model(), tiny_data(), replace(settings, compile=True), tmp_path / "compiled", device="cuda")
    tol = 1e-4 if precision == "fp32" else 3e-2
    for a, b in zip(eager["history"], compiled["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=tol)
    assert [h["step"] for h in compiled["history"]] == [1, 2, 3, 4, 5]
