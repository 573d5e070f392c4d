"""`--compile` (TrainSettings.compile): torch.compile'd layers train exactly as eager ones.

Issue 7's check: the same loss as eager within 1e-5 over a few steps on CPU. Inductor turns the
layers into C++ on CPU, so the test needs a C++ compiler and is slow (mostly compilation).
"""
import os
import shutil

import numpy as np
import pytest
import torch

from tl.heads import HeadSpec, MultiTaskModel
from tl.model import Encoder, EncoderConfig
from tl.tasks import get_task
from tl.train import TaskData, TrainSettings, fit
from helpers import random_split

CXX = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def run(tmp_path, compile: bool):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = [TaskData(spec=get_task("RTE"), train=random_split(24, rng), dev={"dev": random_split(16, rng)})]
    cfg = EncoderConfig(model_type="bert", vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, hidden_act="gelu", hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, max_position_embeddings=64, type_vocab_size=2,
                        layer_norm_eps=1e-12, pad_token_id=0)
    model = MultiTaskModel(Encoder(cfg), [HeadSpec("RTE", 2)])
    # 3 steps of 8, a dev evaluation after each: the history holds every step's loss
    settings = TrainSettings(batch_size=8, max_steps=3, evals_per_epoch=3, lr=1e-3, progress=False, compile=compile,
                             keep_checkpoint=True)
    summary = fit(model, data, settings, tmp_path / f"compile-{compile}")
    return model, summary


@pytest.mark.slow
@pytest.mark.skipif(CXX is None, reason="torch.compile (inductor) needs a C++ compiler on CPU: install g++ or set CXX")
def test_compile_matches_eager(tmp_path):
    eager, a = run(tmp_path, compile=False)
    compiled, b = run(tmp_path, compile=True)
    assert [h["step"] for h in a["history"]] == [h["step"] for h in b["history"]] == [1, 2, 3]
    for ha, hb in zip(a["history"], b["history"]):
        assert hb["train_loss"] == pytest.approx(ha["train_loss"], abs=1e-5)
        assert hb["dev"]["RTE"]["score"] == ha["dev"]["RTE"]["score"]
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q, p, atol=1e-5, rtol=0, msg=name)
    # the layers did run compiled, and the checkpoint keys are the plain module's (STYLE.md 11)
    assert all(getattr(layer, "_compiled_call_impl", None) is not None for layer in compiled.encoder.encoder["layer"])
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "compile-True" / "checkpoint" / "model.safetensors"))
    assert not any("_orig_mod" in k for k in saved)
