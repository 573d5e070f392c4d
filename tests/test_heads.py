"""tl.heads: heads shared by task or by label count (the authors' `classifier`/`mclassifier`/`regression`),
per-example losses checked by hand, and the heads.safetensors round trip, including STILTs' head mapping."""
import pytest
import torch
import torch.nn.functional as F

from tl.heads import HeadSpec, MultiTaskModel, read_head_config
from tl.model import Encoder, EncoderConfig

GLUE = [HeadSpec("RTE", 2), HeadSpec("MRPC", 2), HeadSpec("MNLI", 3), HeadSpec("STS-B", 1, regression=True),
        HeadSpec("QNLI", 2)]


def tiny_encoder(model_type: str = "bert") -> Encoder:
    torch.manual_seed(0)
    config = EncoderConfig(model_type=model_type, vocab_size=64, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64, hidden_act="gelu",
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                           max_position_embeddings=66, type_vocab_size=0 if model_type == "distilbert" else 2,
                           layer_norm_eps=1e-12, pad_token_id=0)
    return Encoder(config)


def batch(task_ids: list, seed: int = 0) -> dict:
    """Rows of unequal lengths; labels valid for each row's task in GLUE (STS-B's a float)."""
    g = torch.Generator().manual_seed(seed)
    B, T = len(task_ids), 9
    ids = torch.randint(1, 64, (B, T), generator=g)
    lengths = torch.randint(3, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    labels = [float(torch.rand((), generator=g) * 5) if GLUE[t].regression else
              int(torch.randint(0, GLUE[t].num_labels, (), generator=g)) for t in task_ids]
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "task_ids": torch.tensor(task_ids), "labels": torch.tensor(labels, dtype=torch.float32)}


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert"])
def test_label_count_shares_one_head_per_count(model_type):
    model = MultiTaskModel(tiny_encoder(model_type), GLUE, share="label_count")
    assert [model.head_key(t) for t in range(5)] == ["classifier", "classifier", "mclassifier", "regression", "classifier"]
    assert sorted(model.heads) == ["classifier", "mclassifier", "regression"]
    per_task = MultiTaskModel(tiny_encoder(model_type), GLUE, share="task")
    assert [per_task.head_key(t) for t in range(5)] == ["RTE", "MRPC", "MNLI", "STS-B", "QNLI"]
    n_head = lambda m: sum(p.numel() for p in m.heads.parameters())  # noqa: E731
    two_way = sum(p.numel() for p in per_task.heads["RTE"].parameters())
    assert n_head(per_task) - n_head(model) == 2 * two_way  # MRPC and QNLI have no parameters of their own
    # one parameter set: a change to RTE's head is MRPC's and QNLI's
    with torch.no_grad():
        next(model.heads["classifier"].parameters()).add_(1.0)
    b = batch([0, 1, 4])
    logits = {t: out for t, _, out in model(b["input_ids"], b["attention_mask"], b["token_type_ids"], b["task_ids"])}
    feats = model.features(model.encoder(b["input_ids"], b["attention_mask"], b["token_type_ids"]))
    torch.testing.assert_close(torch.cat([logits[0], logits[1], logits[4]]), model.heads["classifier"](feats))
    assert MultiTaskModel(tiny_encoder(model_type), [HeadSpec("X", 5)], share="label_count").head_key(0) == "classifier5"


def test_bad_share_mode_is_refused():
    with pytest.raises(ValueError, match="share"):
        MultiTaskModel(tiny_encoder(), GLUE, share="labels")


@pytest.mark.parametrize("share", ["task", "label_count"])
def test_losses_equal_cross_entropy_and_squared_error_by_hand(share):
    model = MultiTaskModel(tiny_encoder(), GLUE, share=share)
    task_ids = [3, 0, 2, 1, 3, 4, 2, 0]
    b = batch(task_ids, seed=1)
    losses = model.losses(b)
    assert losses.shape == (8,) and losses.dtype == torch.float32
    feats = model.features(model.encoder(b["input_ids"], b["attention_mask"], b["token_type_ids"]))
    expected = []
    for row, t in enumerate(task_ids):
        out = model.heads[model.head_key(t)](feats[row:row + 1])
        if GLUE[t].regression:
            expected.append((out[0, 0] - b["labels"][row]) ** 2)
        else:
            expected.append(F.cross_entropy(out, b["labels"][row:row + 1].long()))
    torch.testing.assert_close(losses, torch.stack(expected))
    losses.sum().backward()  # gradients reach every head used and the encoder
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_losses_refuse_rows_of_unknown_tasks():
    model = MultiTaskModel(tiny_encoder(), GLUE[:2])
    with pytest.raises(ValueError, match="task id"):
        model.losses(batch([0, 1]) | {"task_ids": torch.tensor([0, 2])})


@pytest.mark.parametrize("share", ["task", "label_count"])
def test_save_and_load_round_trip(tmp_path, share):
    model = MultiTaskModel(tiny_encoder(), GLUE, share=share)
    model.save_heads(tmp_path)
    assert read_head_config(tmp_path) == (GLUE, share)
    fresh = MultiTaskModel(tiny_encoder(), GLUE, share=share)
    with torch.no_grad():
        for p in fresh.heads.parameters():
            p.normal_()
    assert sorted(fresh.load_heads(tmp_path)) == sorted(model.heads)
    for k, v in model.heads.state_dict().items():
        torch.testing.assert_close(fresh.heads.state_dict()[k], v, rtol=0, atol=0)


def test_support_head_starts_the_target_head(tmp_path):
    """STILTs: the support's trained head (saved under its key) is copied into the target's key."""
    support = MultiTaskModel(tiny_encoder(), [HeadSpec("MNLI", 3)])  # head key "MNLI"
    support.save_heads(tmp_path)
    target = MultiTaskModel(tiny_encoder(), [HeadSpec("RTE", 2), HeadSpec("CB", 3)])
    before = {k: v.clone() for k, v in target.heads.state_dict().items()}
    assert target.load_heads(tmp_path, mapping={"CB": "MNLI", "RTE": "MNLI"}) == ["CB"]  # RTE: 2 vs 3 classes
    for k, v in support.heads["MNLI"].state_dict().items():
        torch.testing.assert_close(target.heads["CB"].state_dict()[k], v, rtol=0, atol=0)
    for k, v in target.heads["RTE"].state_dict().items():
        torch.testing.assert_close(v, before["RTE." + k], rtol=0, atol=0)
    # the authors' rule: both runs share by label count, the key is the same on both sides
    shared = MultiTaskModel(tiny_encoder(), [HeadSpec("MNLI", 3), HeadSpec("RTE", 2)], share="label_count")
    shared.save_heads(tmp_path)
    target = MultiTaskModel(tiny_encoder(), [HeadSpec("CB", 3)], share="label_count")
    assert target.load_heads(tmp_path, mapping={"mclassifier": "mclassifier"}) == ["mclassifier"]
    for k, v in shared.heads["mclassifier"].state_dict().items():
        torch.testing.assert_close(target.heads["mclassifier"].state_dict()[k], v, rtol=0, atol=0)
