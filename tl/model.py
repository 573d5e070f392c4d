"""The encoder (BERT, RoBERTa, DistilRoBERTa, DistilBERT) in pure PyTorch, loading Hugging Face checkpoints.

Follows transformers' `BertModel`, `RobertaModel` and `DistilBertModel` (Devlin et al. 2019) number for number, in
BertModel's checkpoint layout (q/k/v fused at load, split back on save: gpt-fast's load hook); all but attention runs
over the N real tokens only (MosaicBERT's unpadding). Imports no tl file (only torch and safetensors): it can be
copied alone into another project. Notation: B batch, T tokens per row, N real (non-padding) tokens in the batch,
H hidden size, nh attention heads, hs head size (H = nh * hs), I intermediate (feed-forward) size.
"""
import dataclasses
import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

log = logging.getLogger(__name__)

ARCHITECTURES = {"bert": "BertModel", "roberta": "RobertaModel", "distilbert": "DistilBertModel"}  # by model_type
ACTIVATIONS = {"gelu": F.gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
               "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu, "silu": F.silu,
               "swish": F.silu}  # the hidden_act names of transformers' ACT2FN that these checkpoints use

# DistilBERT's config keys and tensor names ({}: the layer index) -> BertModel's; DistilBERT has no token types
# and a fixed LayerNorm eps (transformers' distilbert `Embeddings` and `TransformerBlock` hard-code 1e-12)
DISTILBERT_CONFIG_KEYS = {"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
                          "hidden_dim": "intermediate_size", "activation": "hidden_act",
                          "dropout": "hidden_dropout_prob", "attention_dropout": "attention_probs_dropout_prob"}
DISTILBERT_FIXED = {"type_vocab_size": 0, "layer_norm_eps": 1e-12, "position_embedding_type": "absolute"}
DISTILBERT_KEYS = {f"transformer.layer.{{}}.{a}": f"encoder.layer.{{}}.{b}" for a, b in {
    "attention.q_lin": "attention.self.query", "attention.k_lin": "attention.self.key",
    "attention.v_lin": "attention.self.value", "attention.out_lin": "attention.output.dense",
    "sa_layer_norm": "attention.output.LayerNorm", "ffn.lin1": "intermediate.dense", "ffn.lin2": "output.dense",
    "output_layer_norm": "output.LayerNorm"}.items()}
KEY_MAPS = {"bert": {}, "roberta": {}, "distilbert": DISTILBERT_KEYS}
QKV = ("query", "key", "value")  # the checkpoint's three projections, in the order of the fused `qkv`
LAYER_INDEX = r"\.(\d+)\."  # the `.3.` of `encoder.layer.3.output.dense.weight`


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """The architecture, under the key names of a Hugging Face `config.json` (BertConfig's)."""

    model_type: str
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    pad_token_id: int
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    position_embedding_type: str = "absolute"

    def __post_init__(self):
        for f in dataclasses.fields(self):  # the int fields: sizes, and the two that may be 0
            value, least = getattr(self, f.name), int(f.name not in ("type_vocab_size", "pad_token_id"))
            if f.type is int and (not isinstance(value, int) or isinstance(value, bool) or value < least):
                raise ValueError(f"{f.name} must be an integer >= {least}, got {value!r}")
        kind, types, H, nh = self.model_type, self.type_vocab_size, self.hidden_size, self.num_attention_heads
        dropouts = (self.hidden_dropout_prob, self.attention_probs_dropout_prob)
        rules = [  # (broken, why), checked in this order
            (kind not in ARCHITECTURES, f"unknown model_type {kind!r}; tl supports {', '.join(ARCHITECTURES)}"),
            ((kind == "distilbert") != (types == 0), f"type_vocab_size must be 0 for distilbert (no token types) "
             f"and positive otherwise, got {types} for {kind}"),
            (self.pad_token_id >= self.vocab_size, f"pad_token_id {self.pad_token_id} is not below vocab_size"),
            (H % nh, f"hidden_size {H} is not a multiple of num_attention_heads {nh}"),
            (self.hidden_act not in ACTIVATIONS,
             f"unsupported hidden_act {self.hidden_act!r}; choose one of {', '.join(ACTIVATIONS)}"),
            (not all(0.0 <= p < 1.0 for p in dropouts), f"dropout probabilities must be in [0, 1), got {dropouts}"),
            (self.position_embedding_type != "absolute",
             f"position_embedding_type {self.position_embedding_type!r} is not supported; tl implements 'absolute'"),
            (kind == "roberta" and self.max_position_embeddings <= self.pad_token_id + 1,
             "RoBERTa positions start at pad_token_id + 1: max_position_embeddings is too small")]
        for broken, why in rules:
            if broken:
                raise ValueError(why)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "EncoderConfig":
        """Read a Hugging Face config dict; `source` names the file in error messages."""
        model_type = d.get("model_type")
        if model_type not in ARCHITECTURES:
            raise ValueError(f"{source}: unknown model_type {model_type!r}; tl supports {', '.join(ARCHITECTURES)}")
        if model_type == "distilbert":
            d = {DISTILBERT_CONFIG_KEYS.get(k, k): v for k, v in d.items()} | DISTILBERT_FIXED
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in d and f.default is dataclasses.MISSING]
        if missing:
            raise ValueError(f"{source}: missing {', '.join(map(repr, missing))}; a {model_type} config.json has them")
        try:
            return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def from_checkpoint(cls, folder) -> "EncoderConfig":
        """Read `folder/config.json`."""
        path = Path(folder) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; a model folder holds config.json beside its weights")
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return cls.from_dict(d, source=str(path))

    @property
    def positions(self) -> int:
        """Tokens a sequence may hold: RoBERTa's positions start at pad_token_id + 1 (fairseq make_positions)."""
        return self.max_position_embeddings - (self.pad_token_id + 1 if self.model_type == "roberta" else 0)

    def to_dict(self) -> dict:
        """The Hugging Face `config.json` of this architecture (DistilBERT under its own keys)."""
        d = dataclasses.asdict(self)
        if self.model_type == "distilbert":
            inverse = {v: k for k, v in DISTILBERT_CONFIG_KEYS.items()}
            d = {inverse.get(k, k): v for k, v in d.items() if k not in DISTILBERT_FIXED}
        return {"architectures": [ARCHITECTURES[self.model_type]], **d}


class Grid(NamedTuple):
    """Where the N real tokens sit in the padded (B, T) batch; `keep` and `mask` are None when nothing is padded."""

    keep: Optional[torch.Tensor]  # (N,) flat indices into B * T
    B: int
    T: int
    mask: Optional[torch.Tensor]  # (B, 1, 1, T) bool, True = attend

    @classmethod
    def of(cls, attention_mask: Optional[torch.Tensor], B: int, T: int) -> "Grid":
        if attention_mask is None or bool(attention_mask.all()):
            return cls(None, B, T, None)
        keep = attention_mask.reshape(-1).nonzero().squeeze(1)  # (N,)
        return cls(keep, B, T, attention_mask.bool()[:, None, None, :])

    def pad(self, x: torch.Tensor) -> torch.Tensor:  # (N, D) -> (B, T, D), zeros at padding
        if self.keep is not None:
            x = x.new_zeros(self.B * self.T, x.shape[-1]).index_copy(0, self.keep, x)
        return x.view(self.B, self.T, -1)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (N, D)
        x = x.reshape(self.B * self.T, -1)
        return x if self.keep is None else x.index_select(0, self.keep)


def position_ids(input_ids: torch.Tensor, config: EncoderConfig) -> torch.Tensor:
    """(B, T) -> (B, T): 0 .. T-1; RoBERTa's from pad_token_id + 1, padding at pad_token_id (fairseq make_positions)."""
    if config.model_type != "roberta":
        return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    real = input_ids.ne(config.pad_token_id).long()
    return torch.cumsum(real, dim=1) * real + config.pad_token_id


class Embeddings(nn.Module):
    """Word + position (+ token type) embeddings, LayerNorm, dropout; works on any shape of ids."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        H, pad = config.hidden_size, config.pad_token_id
        self.word_embeddings = nn.Embedding(config.vocab_size, H, padding_idx=pad)
        # RoBERTa's padding positions point at row pad_token_id, which therefore gets no gradient
        position_pad = pad if config.model_type == "roberta" else None
        # DistilBERT's sinusoidal_pos_embds tables are in its checkpoints and train on, as in transformers 5
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, H, padding_idx=position_pad)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, H) if config.type_vocab_size else None
        self.LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, position_ids, token_type_ids):
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the padded grid: `attention.self`, its query/key/value fused in `qkv`."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        H = config.hidden_size
        self.qkv = nn.Linear(H, 3 * H)  # rows: query, key, value (QKV)
        self.nh, self.hs = config.num_attention_heads, H // config.num_attention_heads
        self.dropout_p = config.attention_probs_dropout_prob
        self.register_load_state_dict_pre_hook(SelfAttention.fuse_qkv)

    def fuse_qkv(self, state: dict, prefix: str, *args) -> None:
        """Load hook: the checkpoint's query/key/value -> one (3H, H) `qkv` weight and (3H,) bias; tl's own pass."""
        for param in ("weight", "bias"):
            names = [f"{prefix}{n}.{param}" for n in QKV]
            if all(n in state for n in names):
                state[f"{prefix}qkv.{param}"] = torch.cat([state.pop(n) for n in names])

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        B, T, nh, hs = grid.B, grid.T, self.nh, self.hs
        qkv = grid.pad(self.qkv(x)).view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        q, k, v = qkv.unbind(0)  # (B, nh, T, hs) each
        p = self.dropout_p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=grid.mask, dropout_p=p)  # (B, nh, T, hs)
        return grid.unpad(y.transpose(1, 2))  # (N, H)


def split_qkv(state: dict) -> dict:
    """The inverse of `fuse_qkv` over a whole state dict: each `...attention.self.qkv.*` -> query/key/value."""
    out = {}
    for key, tensor in state.items():  # in order, each fused qkv replaced by its three parts
        names = [key.replace(".qkv.", f".{n}.") for n in QKV] if ".attention.self.qkv." in key else [key]
        out.update(zip(names, tensor.chunk(len(names))))
    return out


class AddNorm(nn.Module):
    """LayerNorm(residual + dropout(dense(x))): the `attention.output` and `output` blocks."""

    def __init__(self, d_in: int, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(d_in, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class Layer(nn.Module):
    """One post-LayerNorm Transformer layer over the N real tokens: (N, H) -> (N, H)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        H, I = config.hidden_size, config.intermediate_size
        # plain containers, so that the names read `attention.self.qkv`, `intermediate.dense` as in the checkpoint
        self.attention = nn.ModuleDict({"self": SelfAttention(config), "output": AddNorm(H, config)})
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(H, I)})
        self.act = ACTIVATIONS[config.hidden_act]
        self.output = AddNorm(I, config)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        x = self.attention["output"](self.attention["self"](x, grid), x)
        return self.output(self.act(self.intermediate["dense"](x)), x)  # through (N, I)


class Pooler(nn.Module):
    """tanh(dense(first token)): BERT's next-sentence pooler, (B, T, H) -> (B, H)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class Encoder(nn.Module):
    """The encoder; `pooler`: a `Pooler`, or None (DistilBERT; `from_pretrained` keeps it iff the checkpoint has it)."""

    def __init__(self, config: EncoderConfig, pooler: Optional[bool] = None):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))})
        self.pooler = Pooler(config) if (config.model_type != "distilbert" if pooler is None else pooler) else None
        if not self.embeddings.word_embeddings.weight.is_meta:  # from_pretrained builds on meta: no init (~1.5 s)
            for module in self.modules():  # BERT's init (transformers' `BertPreTrainedModel._init_weights`)
                if isinstance(module, (nn.Linear, nn.Embedding)):  # LayerNorms keep torch's ones and zeros
                    nn.init.normal_(module.weight, std=config.initializer_range)
                    if isinstance(module, nn.Linear):
                        nn.init.zeros_(module.bias)
                    elif module.padding_idx is not None:
                        nn.init.zeros_(module.weight[module.padding_idx])

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, T) ids, mask (1 = real; None: no padding), token types -> last hidden state (B, T, H), 0 at pads."""
        B, T = input_ids.shape
        if T > self.config.positions:
            raise ValueError(f"sequence length {T} exceeds the model's {self.config.positions} positions")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        grid = Grid.of(attention_mask, B, T)
        flat = lambda t: grid.unpad(t.unsqueeze(-1)).squeeze(-1)  # (B, T) -> (N,): the real tokens
        x = self.embeddings(flat(input_ids), flat(position_ids(input_ids, self.config)), flat(token_type_ids))  # (N, H)
        for layer in self.encoder["layer"]:
            x = layer(x, grid)
        return grid.pad(x)  # (B, T, H)

    @classmethod
    def from_pretrained(cls, folder, dtype: Optional[torch.dtype] = None, device=None) -> "Encoder":
        """Load `folder/config.json` + `model.safetensors` (or `pytorch_model.bin`) strictly, as `dtype` on `device`."""
        config = EncoderConfig.from_checkpoint(folder)
        path, checkpoint = read_weights(Path(folder))
        state, ignored = {}, []  # the encoder's tensors under BertModel names; names of the others
        for key, tensor in checkpoint.items():  # task models (BertForMaskedLM, ...) prefix it: `bert.`
            name = key.partition(".")[2] if key.split(".")[0] in ARCHITECTURES else key
            if name.split(".")[0] not in ("embeddings", "encoder", "transformer", "pooler"):
                ignored.append(key)  # a task head: cls.*, lm_head.*, classifier.*, ...
            elif name not in ("embeddings.position_ids", "embeddings.token_type_ids"):  # buffers old versions saved
                name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
                state[rename(name, KEY_MAPS[config.model_type])] = tensor
        if ignored:
            log.info("%s: ignored %d tensors outside the encoder: %s", path, len(ignored), summarize(ignored))
        with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
            model = cls(config, pooler=any(k.startswith("pooler.") for k in state))
        expected = {k: tuple(v.shape) for k, v in split_qkv(model.state_dict()).items()}
        missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
        misshaped = [f"{k} {tuple(state[k].shape)} (config.json implies {expected[k]})"
                     for k in sorted(expected.keys() & state.keys()) if tuple(state[k].shape) != expected[k]]
        problems = [f"{what} {len(keys)}: {text}" for what, keys, text in (
            ("missing", missing, summarize(missing)), ("unexpected", unexpected, summarize(unexpected)),
            ("wrong shape", misshaped, "; ".join(misshaped))) if keys]
        if problems:
            note = f" (ignored as not encoder: {summarize(ignored)})" if ignored and missing else ""
            raise ValueError(f"{path}: does not fit the {config.model_type} encoder of config.json: "
                             f"{'; '.join(problems)}{note}")
        model.load_state_dict(state, assign=True)  # SelfAttention.fuse_qkv runs here
        return model.to(device=device, dtype=dtype or torch.get_default_dtype())  # casts floating-point tensors only

    def checkpoint_state(self) -> dict:
        """The state dict under the checkpoint's own names: `qkv` split back, DistilBERT's names restored."""
        inverse = {v: k for k, v in KEY_MAPS[self.config.model_type].items()}
        return {rename(k, inverse): v for k, v in split_qkv(self.state_dict()).items()}

    def save_pretrained(self, folder) -> Path:
        """Write `model.safetensors` + `config.json` in the Hugging Face layout (transformers can load them)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.checkpoint_state().items()}
        save_file(tensors, str(folder / "model.safetensors.tmp"), metadata={"format": "pt"})
        (folder / "config.json.tmp").write_text(json.dumps(self.config.to_dict(), indent=2, sort_keys=True) + "\n")
        for name in ("model.safetensors", "config.json"):  # written whole, then renamed into place
            os.replace(folder / f"{name}.tmp", folder / name)
        return folder / "model.safetensors"


def read_weights(folder: Path) -> tuple[Path, dict]:
    """The state dict of `model.safetensors`, else of `pytorch_model.bin` (never running pickled code)."""
    path = next((p for p in (folder / "model.safetensors", folder / "pytorch_model.bin") if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin in this folder")
    try:
        if path.suffix == ".safetensors":
            return path, load_file(str(path), device="cpu")
        return path, torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors raises its own error types for truncated or corrupt files
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if isinstance(e, pickle.UnpicklingError):  # weights_only refused a global the file needs
            raise ValueError(f"{path}: refused: unpickling it would run code ({reason}); "
                             "convert it to model.safetensors with a tool you trust") from None
        kind = "safetensors file" if path.suffix == ".safetensors" else "PyTorch checkpoint"
        raise ValueError(f"{path}: not a readable {kind} ({reason}); download or save it again") from None


def rename(key: str, key_map: dict) -> str:
    """Apply a `{}`-templated module-name map to one tensor name (`...q_lin.weight` -> `...query.weight`)."""
    module, _, param = key.rpartition(".")
    template, index = re.sub(LAYER_INDEX, ".{}.", module, count=1), re.findall(LAYER_INDEX, module)[:1]
    return key_map[template].format(*index) + "." + param if template in key_map else key


def summarize(keys: list) -> str:
    """Tensor names with layer indices folded: `encoder.layer.{0,1,2}.output.dense.weight`."""
    groups = {}
    for key in keys:
        index = re.findall(LAYER_INDEX, key)[:1]
        groups.setdefault(re.sub(LAYER_INDEX, ".{}.", key, count=1), []).append(index[0] if index else "")
    return ", ".join(t.format(i[0] if len(i) == 1 else "{" + ",".join(i) + "}") for t, i in groups.items())
