"""Mixed precision on CPU: one optimizer step of `tl.train.train_step` under bf16 and fp16 autocast
(torch 2.13 runs both on CPU, fp16 with its GradScaler) against the same step in fp32, on the same
tiny model and the same mixed batch (RTE and STS-B rows, unequal lengths).

Stated tolerances, relative to fp32: the loss within 1e-3 (bf16, 8-bit significand) and 2e-4 (fp16,
11-bit); the step's gradients (unscaled, then clipped to norm 0.5 from ~1) within 2e-2 and 3e-3 in L2
norm. Measured on this batch with torch 2.13 on x86-64: loss 1.3e-5 for both, gradients 2.8e-3 (bf16)
and 3.5e-4 (fp16): 7-80x room for other CPUs' kernels, while a loss returned scaled (x65536), fp16
gradients clipped before they are unscaled, or an autocast that silently stayed in fp32 (a loss
bit-equal to fp32's) all fail."""
import numpy as np
import pytest
import torch

from tl import train
from tl.data import TokenizedSplit
from tl.heads import HeadSpec, MultiTaskModel
from tl.model import Encoder, EncoderConfig
from tl.train import TrainSettings

TOLERANCE = {torch.bfloat16: (1e-3, 2e-2), torch.float16: (2e-4, 3e-3)}  # (loss, gradient), relative


def split(n: int, rng: np.random.Generator, regression: bool) -> TokenizedSplit:
    lengths = rng.integers(3, 25, size=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = rng.integers(1, 64, size=offsets[-1]).astype(np.int32)
    labels = rng.normal(size=n).astype(np.float32) if regression else rng.integers(0, 2, size=n)
    return TokenizedSplit(ids=ids, type_ids=np.zeros_like(ids), offsets=offsets, lengths=lengths.astype(np.int32),
                          labels=labels)


class KeepGrads(torch.optim.SGD):
    """An optimizer whose step only records the (unscaled) gradients it was given."""

    def step(self, closure=None):
        self.grads = [p.grad.detach().clone() for p in self.param_groups[0]["params"]]


def one_step(amp_dtype: torch.dtype) -> tuple[float, torch.Tensor]:
    """The loss train_step returns and the gradients it hands the optimizer (clipped), flattened."""
    torch.manual_seed(0)
    config = EncoderConfig(model_type="bert", vocab_size=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=128, hidden_act="gelu", hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0, max_position_embeddings=64, type_vocab_size=2,
                           layer_norm_eps=1e-12, pad_token_id=0)
    model = MultiTaskModel(Encoder(config), [HeadSpec("RTE", 2), HeadSpec("STS-B", 1, True)]).train()
    rng = np.random.default_rng(0)
    splits = [split(32, rng, False), split(32, rng, True)]
    task_ids = rng.permutation(np.repeat([0, 1], [10, 6]))
    example_ids = rng.choice(32, size=16, replace=False)
    settings = TrainSettings(batch_size=16, micro_batch=8, max_grad_norm=0.5)  # the norm is ~1: clipped
    optimizer = KeepGrads(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=amp_dtype == torch.float16)  # as fit makes it
    loss = train.train_step(model, optimizer, scaler, splits, (task_ids, example_ids),
                            train.loss_weights(task_ids, 2, "tl"), train.LoopState(), settings,
                            torch.device("cpu"), amp_dtype, 0)
    return loss, torch.cat([g.flatten() for g in optimizer.grads])


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_step_matches_fp32(amp_dtype):
    loss32, grad32 = one_step(torch.float32)
    loss, grad = one_step(amp_dtype)
    loss_tol, grad_tol = TOLERANCE[amp_dtype]
    assert np.isfinite(loss) and loss != loss32  # autocast ran in the lower precision
    assert abs(loss - loss32) <= loss_tol * abs(loss32), (loss, loss32)
    assert grad.dtype == torch.float32 and float(grad32.norm()) == pytest.approx(0.5, rel=1e-5)  # clipped
    assert float((grad - grad32).norm()) <= grad_tol * float(grad32.norm())  # unscaled before clipping
