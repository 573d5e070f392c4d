"""tl.model against transformers: parity on tiny random configs, the real MiniLM and AntiBERTy checkpoints,
the round trip back into transformers, padding invariance, and one test per kind of bad checkpoint."""
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from oracle import glue_pairs, hf_model_from_config, hf_model_from_dir, random_batch, tiny_config
from tl.model import DISTILBERT_KEYS, Encoder, EncoderConfig, Grid, SelfAttention, position_ids, rename, split_qkv
from tl.tokenizer import Tokenizer

LENGTHS = [7, 12, 3, 12, 9]  # a batch with real padding: rows of 3..12 tokens padded to 12
VARIANTS = {
    "bert": ("bert", {}),
    "bert-gelu_new": ("bert", {"hidden_act": "gelu_new"}),
    "roberta": ("roberta", {}),
    "distilbert": ("distilbert", {}),
    "distilbert-sinusoidal": ("distilbert", {"sinusoidal_pos_embds": True}),
}


def saved_by_transformers(tmp_path, model_type, pooler=True, **overrides):
    """A tiny random transformers model, saved with save_pretrained; returns (model, folder, config dict)."""
    config = tiny_config(model_type, **overrides)
    hf = hf_model_from_config(config, pooler=pooler)
    hf.save_pretrained(tmp_path / model_type)
    return hf, tmp_path / model_type, config


def batch_for(config, left_padded_row=None):
    ids, mask, types = random_batch(config["vocab_size"], config["pad_token_id"], LENGTHS)
    if config.get("type_vocab_size", 0) < 2:
        types = torch.zeros_like(types)
    if left_padded_row is not None:  # move a row's padding to its front (RoBERTa's positions skip it)
        i, shift = left_padded_row, ids.shape[1] - LENGTHS[left_padded_row]
        ids[i], mask[i], types[i] = ids[i].roll(shift), mask[i].roll(shift), types[i].roll(shift)
    return ids, mask, types


def hf_forward(hf, model_type, ids, mask, types):
    kwargs = {} if model_type == "distilbert" else {"token_type_ids": types}
    out = hf(input_ids=ids, attention_mask=mask, **kwargs)
    return out.last_hidden_state, getattr(out, "pooler_output", None)


def hf_grads(tl, model_type):
    """tl's parameter gradients under transformers' names: the fused qkv split back into query/key/value."""
    inverse = {v: k for k, v in DISTILBERT_KEYS.items()} if model_type == "distilbert" else {}
    grads = {n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in tl.named_parameters()
             if p.requires_grad}
    return {rename(n, inverse): g for n, g in split_qkv(grads).items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_parity_with_transformers(tmp_path, variant):
    model_type, overrides = VARIANTS[variant]
    hf, folder, config = saved_by_transformers(tmp_path, model_type, **overrides)
    tl = Encoder.from_pretrained(folder).eval()
    ids, mask, types = batch_for(config, left_padded_row=2)
    real = mask.bool()

    h_ref, pooled_ref = hf_forward(hf, model_type, ids, mask, types)
    h = tl(ids, mask, types)
    torch.testing.assert_close(h[real], h_ref[real], atol=1e-5, rtol=0)
    assert h[~real].abs().max() == 0  # tl's padding positions are zero, not garbage
    starts = real[:, 0]  # rows whose first token is real: the pooler reads it
    if tl.pooler is not None:
        torch.testing.assert_close(tl.pooler(h)[starts], pooled_ref[starts], atol=1e-5, rtol=0)

    # gradients of one scalar loss (over real tokens and the pooler) w.r.t. every parameter
    g = torch.Generator().manual_seed(1)
    weights = torch.randn(h.shape, generator=g) * real[..., None] / real.sum()  # a mean over real tokens
    pool_weights = torch.randn(h.shape[0], h.shape[2], generator=g) * starts[:, None]

    def loss(hidden, pooled):
        return (hidden * weights).sum() + (0 if pooled is None else (pooled * pool_weights).sum())

    loss(h_ref, pooled_ref).backward()
    loss(h, tl.pooler(h) if tl.pooler is not None else None).backward()
    # DistilBERT's sinusoidal table is loaded from the checkpoint and trains on, as in transformers 5
    assert all(p.requires_grad for p in tl.parameters())
    ours = hf_grads(tl, model_type)
    theirs = {n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in hf.named_parameters()
              if p.requires_grad}
    assert ours.keys() == theirs.keys()
    for name, grad in ours.items():
        torch.testing.assert_close(grad, theirs[name], atol=1e-4, rtol=0, msg=lambda m: f"{name}: {m}")


def test_roberta_positions_follow_fairseq():
    pad = 1
    config = EncoderConfig.from_dict(tiny_config("roberta"))
    ids = torch.tensor([[0, 5, 6, 2, pad, pad], [pad, pad, 0, 7, 2, pad]])
    expected = torch.tensor([[2, 3, 4, 5, 1, 1], [1, 1, 2, 3, 4, 1]])  # from pad + 1, padding stays at pad
    assert torch.equal(position_ids(ids, config), expected)


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert"])
def test_training_path_matches_transformers(tmp_path, model_type):
    """In training mode with both dropout probabilities 0 (so nothing random), outputs and every parameter
    gradient equal transformers' model in training mode: the training path's math, padding mask included."""
    dropout = ({"dropout": 0.0, "attention_dropout": 0.0} if model_type == "distilbert"
               else {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    hf, folder, config = saved_by_transformers(tmp_path, model_type, **dropout)
    tl = Encoder.from_pretrained(folder).train()
    hf.train()
    ids, mask, types = batch_for(config)
    ours = tl(ids, mask, types)
    theirs, _ = hf_forward(hf, model_type, ids, mask, types)
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=0)
    weights = torch.randn_like(theirs) * mask[..., None]  # a loss over the real tokens
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    hf_params = dict(hf.named_parameters())
    grads = {n: g for n, g in hf_grads(tl, model_type).items() if hf_params[n].grad is not None}
    for name, grad in grads.items():
        torch.testing.assert_close(grad, hf_params[name].grad, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    assert len(grads) > 10


def test_training_mode_drops_and_is_reproducible(tmp_path):
    _, folder, config = saved_by_transformers(tmp_path, "bert")
    tl = Encoder.from_pretrained(folder).train()
    ids, mask, types = batch_for(config)
    torch.manual_seed(3)
    a = tl(ids, mask, types)
    torch.manual_seed(3)
    b = tl(ids, mask, types)
    c = tl(ids, mask, types)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a, tl.eval()(ids, mask, types))
    assert torch.all(a[~mask.bool()] == 0)  # padding stays zero in training too


def test_hidden_dropout_drops_p_and_scales_survivors(tmp_path):
    """Every hidden dropout (embeddings, attention output, feed-forward output) zeroes a share p of its
    entries and scales the others by 1 / (1 - p) (inverted dropout), p from hidden_dropout_prob."""
    _, folder, config = saved_by_transformers(tmp_path, "bert", hidden_dropout_prob=0.3)
    tl = Encoder.from_pretrained(folder).train()
    seen = []
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
             for m in tl.modules() if isinstance(m, torch.nn.Dropout)]
    ids, mask, types = random_batch(config["vocab_size"], 0, [60] * 50 + [30] * 50)
    tl(ids, mask, types)
    for h in hooks:
        h.remove()
    assert len(seen) == 1 + 2 * config["num_hidden_layers"]
    for x, y in seen:
        dropped = (y == 0) & (x != 0)
        sigma = (0.3 * 0.7 / x.numel()) ** 0.5
        assert abs(dropped.float().mean().item() - 0.3) < 5 * sigma
        torch.testing.assert_close(y[~dropped], x[~dropped] / 0.7)


def test_attention_dropout_is_unbiased():
    """Attention dropout (SDPA's dropout_p) drops attention weights and rescales the rest, so the mean
    over many independent draws is the eval-mode output: 4,000 copies of one padded row, one draw each."""
    config = EncoderConfig(model_type="bert", vocab_size=99, hidden_size=32, num_hidden_layers=1,
                           num_attention_heads=4, intermediate_size=37, max_position_embeddings=64, pad_token_id=0,
                           attention_probs_dropout_prob=0.3)
    torch.manual_seed(0)
    attention = SelfAttention(config)
    with torch.no_grad():
        attention.qkv.weight.normal_(std=0.3)
    copies, row_mask = 4000, torch.tensor([1, 1, 1, 1, 1, 0])
    grid = Grid.of(row_mask.repeat(copies, 1), copies, 6)
    x = torch.randn(5, 32).repeat(copies, 1)  # (N, H): the same 5 real tokens in every row
    with torch.no_grad():
        reference = attention.eval()(x[:5], Grid.of(row_mask[None], 1, 6))  # (5, H)
        draws = attention.train()(x, grid).view(copies, 5, 32)
    assert (draws != reference).any(-1).float().mean() > 0.5  # most rows saw some dropout
    standard_error = draws.std(0) / copies**0.5
    assert ((draws.mean(0) - reference).abs() < 5 * standard_error + 1e-6).all()


def test_qkv_fused_once_at_load_and_split_on_save(tmp_path):
    """One (3H, H) qkv weight and (3H,) bias per layer, the checkpoint's query, key and value stacked;
    save_pretrained and checkpoint_state split them back under transformers' names, and load_state_dict
    takes either layout."""
    _, folder, _ = saved_by_transformers(tmp_path, "bert")
    saved = load_file(folder / "model.safetensors")
    tl = Encoder.from_pretrained(folder)
    names = [n for n, _ in tl.named_parameters() if ".attention.self." in n]
    assert names == [f"encoder.layer.{i}.attention.self.qkv.{p}" for i in range(2) for p in ("weight", "bias")]
    for p in ("weight", "bias"):
        stacked = torch.cat([saved[f"encoder.layer.1.attention.self.{n}.{p}"] for n in ("query", "key", "value")])
        assert torch.equal(getattr(tl.encoder["layer"][1].attention["self"].qkv, p), stacked)
    tl.save_pretrained(tmp_path / "by_tl")
    written = load_file(tmp_path / "by_tl" / "model.safetensors")
    assert written.keys() == saved.keys() - {"embeddings.position_ids"}
    assert all(torch.equal(written[k], saved[k]) for k in written)
    for state in (tl.checkpoint_state(), tl.state_dict()):
        fresh = Encoder(tl.config)
        fresh.load_state_dict(state)
        assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), tl.state_dict().values()))


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_padding_invariance(tmp_path, model_type):
    _, folder, config = saved_by_transformers(tmp_path, model_type)
    tl = Encoder.from_pretrained(folder).eval()
    ids, mask, types = batch_for(config)
    alone = tl(ids[:1, :7], mask[:1, :7], types[:1, :7])  # row 0 has 7 tokens
    padded = torch.full((3, 40), config["pad_token_id"])
    padded_mask, padded_types = torch.zeros(3, 40, dtype=torch.long), torch.zeros(3, 40, dtype=torch.long)
    padded[0, :7], padded_mask[0, :7], padded_types[0, :7] = ids[0, :7], 1, types[0, :7]
    padded[1:, :], padded_mask[1:, :] = 5, 1  # longer neighbours force 33 padding positions on row 0
    in_batch = tl(padded, padded_mask, padded_types)
    torch.testing.assert_close(in_batch[0, :7], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert"])
def test_round_trip_into_transformers(tmp_path, model_type):
    hf, folder, config = saved_by_transformers(tmp_path, model_type)
    tl = Encoder.from_pretrained(folder).eval()
    tl.save_pretrained(tmp_path / "by_tl")
    assert not list((tmp_path / "by_tl").glob("*.tmp"))
    back, info = hf_model_from_dir(tmp_path / "by_tl", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    ids, mask, types = batch_for(config)
    real = mask.bool()
    torch.testing.assert_close(hf_forward(back, model_type, ids, mask, types)[0][real],
                               tl(ids, mask, types)[real], atol=1e-5, rtol=0)
    again = Encoder.from_pretrained(tmp_path / "by_tl")
    assert again.config == tl.config
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), tl.state_dict().values()))


def test_config_round_trip_keeps_distilbert_keys(tmp_path):
    _, folder, _ = saved_by_transformers(tmp_path, "distilbert")
    config = EncoderConfig.from_checkpoint(folder)
    assert (config.hidden_size, config.num_hidden_layers, config.type_vocab_size) == (32, 2, 0)
    written = config.to_dict()
    assert written["dim"] == 32 and written["n_layers"] == 2 and "hidden_size" not in written
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text(json.dumps(written))
    assert EncoderConfig.from_checkpoint(tmp_path / "out") == config


def test_prefixes_legacy_names_and_bin_files(tmp_path, caplog):
    """A BertForPreTraining-style .bin: `bert.` prefix, LayerNorm gamma/beta, a position_ids buffer, a head."""
    hf, folder, config = saved_by_transformers(tmp_path, "bert")
    state = {}
    for k, v in load_file(folder / "model.safetensors").items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        state["bert." + k] = v
    state["bert.embeddings.position_ids"] = torch.arange(64)[None]
    state["cls.predictions.bias"] = torch.zeros(99)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save(state, legacy / "pytorch_model.bin")
    (legacy / "config.json").write_text((folder / "config.json").read_text())
    with caplog.at_level(logging.INFO, logger="tl.model"):
        tl = Encoder.from_pretrained(legacy)
    assert "cls.predictions.bias" in caplog.text  # the ignored head is reported
    reference = Encoder.from_pretrained(folder)
    for (name, a), (_, b) in zip(tl.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


def test_distilbert_prefix_and_heads(tmp_path):
    _, folder, _ = saved_by_transformers(tmp_path, "distilbert")
    state = {"distilbert." + k: v for k, v in load_file(folder / "model.safetensors").items()}
    state["vocab_projector.weight"] = torch.zeros(99, 32)
    save_file(state, folder / "model.safetensors")
    tl = Encoder.from_pretrained(folder)
    assert tl.pooler is None and tl.embeddings.token_type_embeddings is None
    assert torch.equal(tl.encoder["layer"][1].attention["self"].qkv.weight[:32],
                       state["distilbert.transformer.layer.1.attention.q_lin.weight"])


def test_dtype_option(tmp_path):
    _, folder, config = saved_by_transformers(tmp_path, "bert")
    tl = Encoder.from_pretrained(folder, dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in tl.parameters()} == {torch.bfloat16}
    h = tl(*batch_for(config))
    assert h.dtype == torch.bfloat16 and torch.isfinite(h).all()


def test_real_minilm_matches_transformers_on_glue_pairs(minilm_path, shared_glue):
    pairs = glue_pairs(shared_glue, 64, seed=3)
    assert len(pairs) == 64
    tok = Tokenizer.from_checkpoint(minilm_path)
    tl = Encoder.from_pretrained(minilm_path).eval()
    hf = hf_model_from_dir(minilm_path)
    for start in range(0, 64, 32):
        chunk = tok.encode_batch([a for a, _ in pairs[start:start + 32]], [b for _, b in pairs[start:start + 32]])
        T = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), T), tok.pad_id)
        types, mask = torch.zeros_like(ids), torch.zeros_like(ids)
        for i, (row, row_types) in enumerate(chunk):
            ids[i, :len(row)], types[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), torch.tensor(row_types), 1
        assert (mask == 0).any()  # real padding
        with torch.no_grad():
            ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
            h = tl(ids, mask, types)
        real = mask.bool()
        torch.testing.assert_close(h[real], ref.last_hidden_state[real], atol=1e-4, rtol=0)
        torch.testing.assert_close(tl.pooler(h), ref.pooler_output, atol=1e-4, rtol=0)


def test_antiberty_bin_loads_with_bert_prefix():
    antiberty = pytest.importorskip("antiberty")
    folder = Path(antiberty.__file__).parent / "trained_models" / "AntiBERTy_md_smooth"
    if not (folder / "pytorch_model.bin").is_file():
        pytest.skip(f"{folder} has no pytorch_model.bin")
    tl = Encoder.from_pretrained(folder)
    state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    assert any(k.startswith("cls.") for k in state) and tl.pooler is not None
    ours = tl.checkpoint_state()
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.7.output.dense.weight",
                 "encoder.layer.0.attention.self.key.bias", "pooler.dense.weight"):
        assert torch.equal(ours[name], state["bert." + name]), name
    assert len(ours) == len([k for k in state if k.startswith("bert.") and not k.endswith("position_ids")])


# ------------------------------------------------------------------------------------- bad input
def assert_one_line(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        Encoder.from_pretrained(tmp_path / "nowhere")
    assert_one_line(e, str(tmp_path / "nowhere"), "no such")


def test_truncated_safetensors(tmp_path):
    _, folder, _ = saved_by_transformers(tmp_path, "bert")
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError) as e:
        Encoder.from_pretrained(folder)
    assert_one_line(e, str(path), "not a readable safetensors file")


def test_config_missing_a_field(tmp_path):
    _, folder, _ = saved_by_transformers(tmp_path, "bert")
    config = json.loads((folder / "config.json").read_text())
    del config["hidden_size"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as e:
        Encoder.from_pretrained(folder)
    assert_one_line(e, str(folder / "config.json"), "'hidden_size'")


def test_tensor_of_wrong_shape(tmp_path):
    _, folder, _ = saved_by_transformers(tmp_path, "bert")
    state = load_file(folder / "model.safetensors")
    state["encoder.layer.1.intermediate.dense.weight"] = torch.zeros(40, 32)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError) as e:
        Encoder.from_pretrained(folder)
    assert_one_line(e, str(folder / "model.safetensors"), "wrong shape",
                    "encoder.layer.1.intermediate.dense.weight (40, 32)", "(37, 32)")


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    _, folder, _ = saved_by_transformers(tmp_path, "bert")
    state = load_file(folder / "model.safetensors")
    del state["encoder.layer.0.output.LayerNorm.bias"], state["encoder.layer.1.output.LayerNorm.bias"]
    state["encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(3)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError) as e:
        Encoder.from_pretrained(folder)
    assert_one_line(e, "missing 2: encoder.layer.{0,1}.output.LayerNorm.bias",
                    "unexpected 1: encoder.layer.0.attention.self.rotary.weight")


def test_unknown_model_type(tmp_path):
    _, folder, _ = saved_by_transformers(tmp_path, "bert")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "gpt2"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as e:
        Encoder.from_pretrained(folder)
    assert_one_line(e, str(folder / "config.json"), "unknown model_type 'gpt2'")


class RunsCode:
    """Unpickling this calls os.mkdir: what a malicious checkpoint could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_bin_that_needs_pickle_code_execution(tmp_path):
    _, folder, _ = saved_by_transformers(tmp_path, "bert")
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"embeddings.word_embeddings.weight": torch.zeros(99, 32), "x": RunsCode(marker)},
               folder / "pytorch_model.bin")
    with pytest.raises(ValueError) as e:
        Encoder.from_pretrained(folder)
    assert_one_line(e, str(folder / "pytorch_model.bin"), "unpickling it would run code")
    assert not marker.exists()


def test_invalid_config_values():
    base = dict(model_type="bert", vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=37, max_position_embeddings=64, pad_token_id=0)
    EncoderConfig(**base)
    EncoderConfig(**(base | {"model_type": "distilbert", "type_vocab_size": 0}))
    for bad, fragment in (({"num_attention_heads": 5}, "multiple of num_attention_heads"),
                          ({"hidden_act": "mish"}, "unsupported hidden_act 'mish'"),
                          ({"vocab_size": 0}, "vocab_size"), ({"hidden_size": 32.0}, "hidden_size"),
                          ({"num_hidden_layers": True}, "num_hidden_layers"),
                          ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
                          ({"pad_token_id": 99}, "pad_token_id"), ({"pad_token_id": -1}, "pad_token_id"),
                          ({"type_vocab_size": 0}, "type_vocab_size"),
                          ({"model_type": "distilbert"}, "type_vocab_size"),
                          ({"hidden_dropout_prob": 1.0}, "dropout"),
                          ({"attention_probs_dropout_prob": -0.1}, "dropout"),
                          ({"model_type": "gpt2"}, "unknown model_type 'gpt2'"),
                          ({"model_type": "roberta", "pad_token_id": 1, "max_position_embeddings": 2},
                           "max_position_embeddings")):
        with pytest.raises(ValueError) as e:
            EncoderConfig(**(base | bad))
        assert_one_line(e, fragment)


def test_config_json_that_is_not_an_object(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError) as e:
        Encoder.from_pretrained(tmp_path)
    assert_one_line(e, str(tmp_path / "config.json"), "expected a JSON object")


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_sequence_longer_than_the_positions(tmp_path, model_type):
    """BERT covers max_position_embeddings tokens; RoBERTa's positions start at pad_token_id + 1, so it
    covers pad_token_id + 1 fewer: one token more than that raises before any embedding lookup."""
    _, folder, config = saved_by_transformers(tmp_path, model_type)
    tl = Encoder.from_pretrained(folder).eval()
    limit = config["max_position_embeddings"] - (config["pad_token_id"] + 1 if model_type == "roberta" else 0)
    ids = torch.full((1, limit), 5)
    assert tl(ids, torch.ones_like(ids)).shape == (1, limit, 32)
    ids = torch.full((1, limit + 1), 5)
    with pytest.raises(ValueError) as e:
        tl(ids, torch.ones_like(ids))
    assert_one_line(e, f"sequence length {limit + 1}", f"{limit} positions")
