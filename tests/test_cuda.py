"""The CUDA path of tl.train: fused AdamW and pinned-memory, non-blocking batch copies.

Skipped without a CUDA device (AMP fp16/bf16 runs are in test_train.py, DDP with NCCL in
test_ddp.py). Each test compares against the CPU path, so it checks results, not only that it runs.
"""
import pytest
import torch

from tl.train import TrainSettings, make_optimizer, to_device

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
