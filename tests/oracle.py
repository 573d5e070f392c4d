"""The reference implementation: transformers' models and tokenizers, as oracles for tl's tests and benchmarks.

transformers is a test-only dependency: tl/ and tools/ never import it; `tools/bench_encoder.py` reaches
this file through sys.path for its baseline. No pytest import here, so tools can import it too.
"""
import random
from pathlib import Path

import torch
import transformers

transformers.logging.set_verbosity_error()  # no load reports or progress bars in test and benchmark output
transformers.utils.logging.disable_progress_bar()
HF_MODELS = {"bert": transformers.BertModel, "roberta": transformers.RobertaModel,
             "distilbert": transformers.DistilBertModel}


def tiny_config(model_type: str, **overrides) -> dict:
    """A small random architecture as a Hugging Face config dict (HF key names, DistilBERT's own)."""
    if model_type == "distilbert":
        d = dict(model_type="distilbert", vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                 max_position_embeddings=64, pad_token_id=0, activation="gelu", dropout=0.1,
                 attention_dropout=0.1, sinusoidal_pos_embds=False)
    else:
        d = dict(model_type=model_type, vocab_size=99, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
                 type_vocab_size=2, hidden_act="gelu", hidden_dropout_prob=0.1,
                 attention_probs_dropout_prob=0.1, layer_norm_eps=1e-12, pad_token_id=0)
        if model_type == "roberta":  # as roberta-base: pad 1, positions offset by pad + 1, one token type
            d.update(pad_token_id=1, max_position_embeddings=66, type_vocab_size=1, layer_norm_eps=1e-5)
    d.update(overrides)
    return d


def hf_model_from_config(config: dict, seed: int = 0, pooler: bool = True) -> torch.nn.Module:
    """A randomly initialised transformers model (SDPA attention) for a config dict."""
    torch.manual_seed(seed)
    model_type = config["model_type"]
    cfg = transformers.AutoConfig.for_model(**config)
    kwargs = {} if model_type == "distilbert" else {"add_pooling_layer": pooler}
    model = HF_MODELS[model_type](cfg, **kwargs)
    model.set_attn_implementation("sdpa")
    return model.eval()


def hf_model_from_dir(folder, model_type: str = None, pooler: bool = True, output_loading_info: bool = False):
    """transformers' encoder loaded from a checkpoint folder (SDPA attention, float32, eval mode)."""
    folder = Path(folder)
    if model_type is None:
        model_type = transformers.AutoConfig.from_pretrained(folder).model_type
    kwargs = {} if model_type == "distilbert" else {"add_pooling_layer": pooler}
    out = HF_MODELS[model_type].from_pretrained(folder, attn_implementation="sdpa", dtype=torch.float32,
                                                output_loading_info=output_loading_info, **kwargs)
    if output_loading_info:
        model, info = out
        return model.eval(), info
    return out.eval()


def hf_tokenizer(folder, kind: str = "AutoTokenizer"):
    """transformers' tokenizer of a checkpoint folder; `kind` names the class when the folder has no
    tokenizer_config.json to say it (e.g. "RobertaTokenizer" for bare vocab.json + merges.txt)."""
    return getattr(transformers, kind).from_pretrained(str(folder))


def random_batch(vocab_size: int, pad_token_id: int, lengths, seed: int = 0):
    """(input_ids, attention_mask, token_type_ids), each (B, max(lengths)), right-padded with pad_token_id.

    Ids avoid the pad id and the first two type ids split each row in half, like a sentence pair."""
    g = torch.Generator().manual_seed(seed)
    B, T = len(lengths), max(lengths)
    ids = torch.randint(0, vocab_size - 1, (B, T), generator=g)
    ids = ids + (ids >= pad_token_id).long()  # skip the pad id
    mask = torch.zeros(B, T, dtype=torch.long)
    types = torch.zeros(B, T, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        types[i, n // 2:n] = 1
    ids[mask == 0] = pad_token_id
    return ids, mask, types


def glue_pairs(glue_dir, n: int, seed: int = 0):
    """n real sentence pairs (a, b) from the RTE, MRPC and STS-B train files, shuffled."""
    glue_dir = Path(glue_dir)
    pairs = []
    for task, (ia, ib) in {"RTE": (1, 2), "MRPC": (3, 4), "STS-B": (7, 8)}.items():
        lines = (glue_dir / task / "train.tsv").read_text(encoding="utf-8-sig").splitlines()[1:]
        pairs += [(c[ia], c[ib]) for c in (line.split("\t") for line in lines) if len(c) > max(ia, ib)]
    random.Random(seed).shuffle(pairs)
    return pairs[:n]


def glue_singles(glue_dir, n: int, seed: int = 0):
    """n real single sentences from the SST-2 and CoLA train files, shuffled."""
    glue_dir = Path(glue_dir)
    sst = (glue_dir / "SST-2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    cola = (glue_dir / "CoLA" / "train.tsv").read_text(encoding="utf-8").splitlines()
    texts = [line.split("\t")[0] for line in sst] + [line.split("\t")[3] for line in cola]
    random.Random(seed).shuffle(texts)
    return texts[:n]
