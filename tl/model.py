"""The encoder: BERT, RoBERTa and DistilBERT in pure PyTorch, loading Hugging Face checkpoints.

Follows transformers' `BertModel`, `RobertaModel` and `DistilBertModel` (a post-LayerNorm Transformer
encoder, Devlin et al. 2019) number for number; DistilRoBERTa is `roberta` with 6 layers. The module
tree mirrors the checkpoint tree of BertModel (`embeddings.*`, `encoder.layer.N.attention.self.query`,
...), so loading is an identity copy; DistilBERT's different names go through one declarative key map.

Padding is removed inside the encoder: every Linear, LayerNorm and activation runs only over the N real
tokens of the batch, and only attention sees the padded (B, T) grid (the "unpadding" of MosaicBERT and
FlashAttention's varlen kernels). Outputs at padding positions are zero.

Notation: B batch, T tokens per row, N real (non-padding) tokens in the batch, H hidden size,
nh attention heads, hs head size (H = nh * hs), I intermediate (feed-forward) size.
"""
import dataclasses
import json
import logging
import math
import os
import pickle
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

log = logging.getLogger(__name__)

MODEL_TYPES = ("bert", "roberta", "distilbert")
ARCHITECTURES = {"bert": "BertModel", "roberta": "RobertaModel", "distilbert": "DistilBertModel"}

# hidden_act names of transformers' ACT2FN that these checkpoints use
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}

# DistilBertConfig's keys -> the BertConfig keys tl uses; DistilBERT has no token types and a fixed
# LayerNorm eps (transformers' distilbert `Embeddings` and `TransformerBlock` hard-code 1e-12)
DISTILBERT_CONFIG_KEYS = {
    "dim": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "hidden_dim": "intermediate_size",
    "activation": "hidden_act",
    "dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
}
DISTILBERT_FIXED = {"type_vocab_size": 0, "layer_norm_eps": 1e-12, "position_embedding_type": "absolute"}

# DistilBERT checkpoint names -> tl (BertModel) names; {} is the layer index
DISTILBERT_KEYS = {
    "transformer.layer.{}.attention.q_lin": "encoder.layer.{}.attention.self.query",
    "transformer.layer.{}.attention.k_lin": "encoder.layer.{}.attention.self.key",
    "transformer.layer.{}.attention.v_lin": "encoder.layer.{}.attention.self.value",
    "transformer.layer.{}.attention.out_lin": "encoder.layer.{}.attention.output.dense",
    "transformer.layer.{}.sa_layer_norm": "encoder.layer.{}.attention.output.LayerNorm",
    "transformer.layer.{}.ffn.lin1": "encoder.layer.{}.intermediate.dense",
    "transformer.layer.{}.ffn.lin2": "encoder.layer.{}.output.dense",
    "transformer.layer.{}.output_layer_norm": "encoder.layer.{}.output.LayerNorm",
}
KEY_MAPS = {"bert": {}, "roberta": {}, "distilbert": DISTILBERT_KEYS}

# prefixes of the task models (BertForSequenceClassification, RobertaForMaskedLM, ...) around the encoder
PREFIXES = ("bert.", "roberta.", "distilbert.")
ENCODER_ROOTS = ("embeddings", "encoder", "transformer", "pooler")
# non-persistent buffers that older transformers versions saved anyway
IGNORED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
LEGACY_SUFFIXES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


# --------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
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
    sinusoidal_pos_embds: bool = False  # DistilBERT only: fixed sinusoidal position embeddings

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"unknown model_type {self.model_type!r}; tl supports {', '.join(MODEL_TYPES)}")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.type_vocab_size, int) or self.type_vocab_size < 0:
            raise ValueError(f"type_vocab_size must be a non-negative integer, got {self.type_vocab_size!r}")
        if not isinstance(self.pad_token_id, int) or not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id must be an integer in [0, vocab_size), got {self.pad_token_id!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                             f"{self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {self.hidden_act!r}; choose one of {', '.join(ACTIVATIONS)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.position_embedding_type != "absolute":
            raise ValueError(f"position_embedding_type {self.position_embedding_type!r} is not supported; "
                             "tl implements 'absolute' only")
        if self.model_type == "distilbert" and self.type_vocab_size != 0:
            raise ValueError("DistilBERT has no token type embeddings: type_vocab_size must be 0")
        if self.model_type != "distilbert" and self.type_vocab_size == 0:
            raise ValueError(f"{self.model_type} needs token type embeddings: type_vocab_size must be >= 1")
        if self.sinusoidal_pos_embds and self.model_type != "distilbert":
            raise ValueError("sinusoidal_pos_embds is a DistilBERT option")
        if self.model_type == "roberta" and self.max_position_embeddings <= self.pad_token_id + 1:
            raise ValueError("RoBERTa positions start at pad_token_id + 1: max_position_embeddings is too small")

    @property
    def max_length(self) -> int:
        """The longest sequence the position embeddings cover."""
        offset = self.pad_token_id + 1 if self.model_type == "roberta" else 0
        return self.max_position_embeddings - offset

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "EncoderConfig":
        """Read a Hugging Face config dict; `source` names the file in error messages."""
        model_type = d.get("model_type")
        if model_type not in MODEL_TYPES:
            raise ValueError(f"{source}: unknown model_type {model_type!r}; tl supports {', '.join(MODEL_TYPES)}")
        if model_type == "distilbert":
            d = {DISTILBERT_CONFIG_KEYS.get(k, k): v for k, v in d.items()} | DISTILBERT_FIXED
        fields = {f.name: f for f in dataclasses.fields(cls)}
        missing = [name for name, f in fields.items()
                   if name not in d and f.default is dataclasses.MISSING]
        if missing:
            raise ValueError(f"{source}: missing {', '.join(repr(m) for m in missing)}; "
                             f"a {model_type} config.json needs them")
        try:
            return cls(**{name: d[name] for name in fields if name in d})
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def from_checkpoint(cls, folder) -> "EncoderConfig":
        """Read `folder/config.json`."""
        path = Path(folder) / "config.json"
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{folder}: no such model folder")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; a model folder needs config.json beside its weights")
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return cls.from_dict(d, source=str(path))

    def to_dict(self) -> dict:
        """The Hugging Face `config.json` of this architecture (DistilBERT under its own keys)."""
        d = dataclasses.asdict(self)
        if self.model_type == "distilbert":
            inverse = {v: k for k, v in DISTILBERT_CONFIG_KEYS.items()}
            d = {inverse.get(k, k): v for k, v in d.items() if k not in DISTILBERT_FIXED}
        else:
            del d["sinusoidal_pos_embds"]
        return {"architectures": [ARCHITECTURES[self.model_type]], **d}

    def save(self, folder) -> Path:
        """Write `folder/config.json` atomically."""
        path = Path(folder) / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return path


# --------------------------------------------------------------------------------------------- padding
class Grid(NamedTuple):
    """Where the N real tokens sit in the padded (B, T) batch; `keep` is None when nothing is padded."""

    keep: Optional[torch.Tensor]  # (N,) flat indices into B * T
    B: int
    T: int
    mask: Optional[torch.Tensor]  # (B, 1, 1, T) bool, True = attend; None when nothing is padded
    bias: Optional[torch.Tensor] = None  # (B, 1, 1, T) float, 0 / -inf: `mask` as an additive bias, built once


def to_grid(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(N, D) -> (B, T, D), zeros at padding."""
    if grid.keep is None:
        return x.view(grid.B, grid.T, -1)
    out = x.new_zeros(grid.B * grid.T, x.shape[-1])
    return out.index_copy(0, grid.keep, x).view(grid.B, grid.T, -1)


def from_grid(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(B, T, D) -> (N, D)."""
    x = x.reshape(grid.B * grid.T, -1)
    return x if grid.keep is None else x.index_select(0, grid.keep)


# --------------------------------------------------------------------------------------------- dropout
def mask_chunk(n: int) -> int:
    """Entries per generator in `keep_mask` for an n-entry mask: a function of n alone, so that masks do
    not depend on the thread count. 2^18 up to 2^22 entries (a MiniLM batch's hidden masks: 2 cores busy
    from 0.3M entries; 650k: 2.6 -> 1.1 ms), 2^20 above (fewer generator setups; 25M: 50 -> 38 ms)."""
    return 1 << 18 if n <= 1 << 22 else 1 << 20


_mask_pool: Optional[tuple] = None  # (pid, workers, ThreadPoolExecutor), made on first use in each process


def keep_mask(shape, p: float, device, scale: Optional[float] = None) -> torch.Tensor:
    """A bool tensor, each entry True with probability 1 - p, independently; seeded by torch's generator.
    With `scale`, a float32 tensor of `scale` (kept) and 0 (dropped) instead: dropout is then one multiply.

    torch's CPU `bernoulli_` and `random_` draw one number at a time from a single Mersenne Twister on one
    thread (3 ns an entry: 7% of a MiniLM training step at batch 128, most of dropout's cost). Here torch's
    generator only draws one 62-bit seed per chunk of `mask_chunk(n)` entries; each chunk is filled by its own
    numpy PCG64 generator with uniform 32-bit integers, compared with round(p * 2^32) (so the realised drop
    probability is p to within 2^-33), the chunks in parallel on torch's thread count (numpy releases the
    GIL). 2-3x faster than `random_` on 2 cores for masks of 2M+ entries. Same seed, same mask, whatever
    the thread count; resuming from torch's saved RNG state resumes the masks."""
    n = math.prod(shape)
    size = mask_chunk(n)
    chunks = max(1, -(-n // size))
    seeds = torch.randint(0, 2**62, (chunks,)).tolist()
    threshold = np.uint32(round(p * 2**32))
    out = np.empty(n, dtype=bool if scale is None else np.float32)

    def fill(i: int) -> None:
        lo, hi = i * size, min(n, (i + 1) * size)
        draws = np.random.Generator(np.random.PCG64(seeds[i])).integers(0, 2**32, hi - lo, dtype=np.uint32)
        if scale is None:
            np.greater_equal(draws, threshold, out=out[lo:hi])
        else:
            np.multiply(draws >= threshold, np.float32(scale), out=out[lo:hi])

    threads = min(chunks, torch.get_num_threads())
    if threads == 1:
        for i in range(chunks):
            fill(i)
    else:
        global _mask_pool
        if _mask_pool is None or _mask_pool[:2] != (os.getpid(), threads):  # a forked child needs its own
            if _mask_pool is not None and _mask_pool[0] == os.getpid():
                _mask_pool[2].shutdown(wait=False)
            _mask_pool = os.getpid(), threads, ThreadPoolExecutor(threads, thread_name_prefix="tl-dropout")
        list(_mask_pool[2].map(fill, range(chunks)))
    return torch.from_numpy(out).view(shape).to(device)


def own_dropout(p: float, training: bool, x: torch.Tensor) -> bool:
    """Whether tl draws this dropout itself (`keep_mask`): training on CPU with 0 < p < 1. Other devices
    keep F.dropout's and SDPA's fused kernels."""
    return training and 0.0 < p < 1.0 and x.device.type == "cpu"


def dropout(x: torch.Tensor, p: float, training: bool, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """F.dropout (plus `residual`, if given); on CPU with `keep_mask` (same distribution, cheaper masks)."""
    if not own_dropout(p, training, x):
        y = F.dropout(x, p, training)
        return y if residual is None else residual + y
    # one multiply by a mask of 1 / (1 - p) and 0: one pass forward, one backward (`where` + `mul_`: two
    # each; a bool mask in `*` is first copied to float, forward and backward); with the residual add in
    # the same pass (addcmul)
    mask = keep_mask(x.shape, p, x.device, scale=1.0 / (1.0 - p)).to(x.dtype)
    return x * mask if residual is None else torch.addcmul(residual, x, mask)


class Dropout(nn.Dropout):
    """nn.Dropout through `dropout` (no state: checkpoints are unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


# --------------------------------------------------------------------------------------------- modules
def bert_positions(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """(B, T) -> (B, T): 0 .. T-1 in every row."""
    return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)


def roberta_positions(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """(B, T) -> (B, T): positions count real tokens from pad_token_id + 1; padding keeps pad_token_id
    (fairseq `utils.make_positions`, as transformers' `create_position_ids_from_input_ids`)."""
    real = input_ids.ne(pad_token_id).long()
    return torch.cumsum(real, dim=1) * real + pad_token_id


POSITIONS = {"bert": bert_positions, "roberta": roberta_positions, "distilbert": bert_positions}


def sinusoidal_table(n_pos: int, dim: int) -> torch.Tensor:
    """(n_pos, dim) fixed position table of Vaswani et al. 2017, as DistilBERT's `create_sinusoidal_embeddings`."""
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]
    freq = torch.pow(10000.0, 2 * (torch.arange(dim) // 2) / dim)[None, :]
    table = pos / freq
    table[:, 0::2], table[:, 1::2] = table[:, 0::2].sin(), table[:, 1::2].cos()
    return table.float()


class Embeddings(nn.Module):
    """Word + position (+ token type) embeddings, LayerNorm, dropout; works on any shape of ids."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        H, pad = config.hidden_size, config.pad_token_id
        self.word_embeddings = nn.Embedding(config.vocab_size, H, padding_idx=pad)
        # RoBERTa's padding positions point at row pad_token_id, which therefore gets no gradient
        position_pad = pad if config.model_type == "roberta" else None
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, H, padding_idx=position_pad)
        if config.sinusoidal_pos_embds:
            with torch.no_grad():
                self.position_embeddings.weight.copy_(sinusoidal_table(config.max_position_embeddings, H))
            self.position_embeddings.weight.requires_grad_(False)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, H) if config.type_vocab_size else None
        self.LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, position_ids, token_type_ids):
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the padded grid; names mirror `attention.self`."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        H = config.hidden_size
        self.query, self.key, self.value = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
        self.nh, self.hs = config.num_attention_heads, H // config.num_attention_heads
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        B, T, nh, hs = grid.B, grid.T, self.nh, self.hs
        # one (N, H) x (H, 3H) matmul and one scatter to the grid instead of three of each; the weights
        # stay three Linears, as the checkpoint stores them (the concatenation copies 3 H^2 floats per
        # step). Same outputs; in interleaved A/Bs of MiniLM training steps (1 CPU thread) 1-6% less CPU
        # time on short sequences (SST-2), within noise on long ones (RTE); fewer operations to launch
        p = self.dropout_p if self.training else 0.0
        own = own_dropout(p, self.training, x)  # then attention_cpu_dropout
        wq, wk, wv = self.query.weight, self.key.weight, self.value.weight
        bq, bk, bv = self.query.bias, self.key.bias, self.value.bias
        if own:  # its q and v scales go into the weights: 4 H^2 + 2 H multiplies instead of 2 N H, and their backward
            s, c = hs**-0.5, 1.0 / (1.0 - p)
            wq, bq, wv, bv = wq * s, bq * s, wv * c, bv * c
        w, b = torch.cat([wq, wk, wv]), torch.cat([bq, bk, bv])  # (3H, H), (3H,)
        qkv = to_grid(F.linear(x, w, b), grid).view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        q, k, v = qkv.unbind(0)  # (B, nh, T, hs) each
        if own:
            y = attention_cpu_dropout(q, k, v, grid.bias, p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=grid.mask, dropout_p=p)  # (B, nh, T, hs)
        return from_grid(y.transpose(1, 2), grid)  # (N, H)


def attention_cpu_dropout(q, k, v, bias: Optional[torch.Tensor], p: float) -> torch.Tensor:
    """softmax(q k^T + bias) with dropout p, times v: (B, nh, T, hs) -> (B, nh, T, hs), for q already
    scaled by 1 / sqrt(hs) and v by dropout's 1 / (1 - p) (SelfAttention folds both into its weights).

    What SDPA computes in training on CPU (it has no fused kernel with dropout there and falls back to
    this math), with `keep_mask` instead of `bernoulli_` and the padding bias built once per batch
    instead of per layer."""
    scores = torch.matmul(q, k.transpose(-1, -2))  # (B, nh, T, T)
    if bias is not None:
        scores.add_(bias)
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(torch.where(keep_mask(probs.shape, p, probs.device), probs, 0.0), v)


class AddNorm(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual); the `attention.output` and `output` blocks."""

    def __init__(self, d_in: int, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(d_in, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(dropout(self.dense(x), self.dropout.p, self.training, residual))


class Intermediate(nn.Module):
    """dense -> activation: the first half of the feed-forward block."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class Layer(nn.Module):
    """One post-LayerNorm Transformer layer over the N real tokens: (N, H) -> (N, H)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        H = config.hidden_size
        # a plain container, so that the names read `attention.self.query` as in the checkpoint
        self.attention = nn.ModuleDict({"self": SelfAttention(config), "output": AddNorm(H, config)})
        self.intermediate = Intermediate(config)
        self.output = AddNorm(config.intermediate_size, config)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        x = self.attention["output"](self.attention["self"](x, grid), x)
        return self.output(self.intermediate(x), x)


class Pooler(nn.Module):
    """tanh(dense(first token)): BERT's next-sentence pooler, (B, T, H) -> (B, H)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class Encoder(nn.Module):
    """The encoder: `forward(input_ids, attention_mask, token_type_ids=None)` -> last hidden state (B, T, H),
    zero at padding positions.

    `pooler` is a `Pooler` or None (DistilBERT has none; `from_pretrained` keeps it iff the checkpoint has it).
    """

    def __init__(self, config: EncoderConfig, pooler: Optional[bool] = None):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))})
        if pooler is None:
            pooler = config.model_type != "distilbert"
        self.pooler = Pooler(config) if pooler else None
        self.positions = POSITIONS[config.model_type]
        if not self.embeddings.word_embeddings.weight.is_meta:  # on meta (from_pretrained) init costs ~1.5 s for nothing
            self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation (transformers' `BertPreTrainedModel._init_weights`)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding) and module.weight.requires_grad:
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """input_ids, attention_mask (1 = real token, None = no padding), token_type_ids: (B, T) integers.
        DistilBERT has no token types and ignores token_type_ids."""
        B, T = input_ids.shape
        if T > self.config.max_length:
            raise ValueError(f"sequence length {T} exceeds the model's {self.config.max_length} positions")
        positions = self.positions(input_ids, self.config.pad_token_id)  # (B, T)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        keep = None if attention_mask is None else attention_mask.reshape(-1).nonzero().squeeze(1)  # (N,)
        if keep is None or keep.numel() == B * T:
            grid = Grid(None, B, T, None)
        else:
            mask = attention_mask.bool()[:, None, None, :]
            bias = torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, float("-inf"))
            grid = Grid(keep, B, T, mask, bias)
        flat = lambda t: from_grid(t.unsqueeze(-1), grid).squeeze(-1)  # (B, T) -> (N,): the real tokens
        x = self.embeddings(flat(input_ids), flat(positions), flat(token_type_ids))  # (N, H)
        for layer in self.encoder["layer"]:
            x = layer(x, grid)
        return to_grid(x, grid)  # (B, T, H)

    # ----------------------------------------------------------------------------------- checkpoints
    @classmethod
    def from_pretrained(cls, folder, dtype: Optional[torch.dtype] = None, device=None) -> "Encoder":
        """Load `folder/config.json` + `model.safetensors` (or `pytorch_model.bin`), strictly.

        Floating-point weights become `dtype` (default: torch's default dtype, float32), on `device`.
        """
        folder = Path(folder)
        config = EncoderConfig.from_checkpoint(folder)
        path, checkpoint = read_weights(folder)
        state, ignored = encoder_state(checkpoint, config.model_type)
        if ignored:
            log.info("%s: ignored %d tensors outside the encoder: %s", path, len(ignored), summarize(ignored))
        with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
            model = cls(config, pooler=any(k.startswith("pooler.") for k in state))
        check_state(model, state, path, ignored)
        dtype = dtype or torch.get_default_dtype()
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        model.load_state_dict(state, assign=True)
        return model.to(device=device)

    def save_pretrained(self, folder) -> Path:
        """Write `model.safetensors` + `config.json` in the Hugging Face layout (transformers can load them)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        inverse = {v: k for k, v in KEY_MAPS[self.config.model_type].items()}
        tensors = {rename(k, inverse): v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        path = folder / "model.safetensors"
        tmp = folder / "model.safetensors.tmp"
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, path)
        self.config.save(folder)
        return path


# --------------------------------------------------------------------------------------------- loading
def read_weights(folder: Path) -> tuple[Path, dict]:
    """The state dict of `model.safetensors`, else of `pytorch_model.bin` (never running pickled code)."""
    path = folder / "model.safetensors"
    if path.is_file():
        try:
            return path, load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types for truncated or corrupt files
            raise ValueError(f"{path}: not a readable safetensors file ({first_line(e)}); "
                             "download or save it again") from None
    path = folder / "pytorch_model.bin"
    if path.is_file():
        try:
            return path, torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise ValueError(f"{path}: refused: unpickling it would run code ({first_line(e)}); "
                             "convert it to model.safetensors with a tool you trust") from None
        except (RuntimeError, EOFError, OSError) as e:
            raise ValueError(f"{path}: not a readable PyTorch checkpoint ({first_line(e)})") from None
    raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin in this folder")


def rename(key: str, key_map: dict) -> str:
    """Apply a `{}`-templated module-name map to one tensor name (`...q_lin.weight` -> `...query.weight`)."""
    module, _, param = key.rpartition(".")
    template = re.sub(r"\.(\d+)\.", ".{}.", module, count=1)
    index = re.findall(r"\.(\d+)\.", module)[:1]
    if template in key_map:
        return key_map[template].format(*index) + "." + param
    return key


def encoder_state(checkpoint: dict, model_type: str) -> tuple[dict, list]:
    """Checkpoint names -> tl names: strip the task model's prefix, rename legacy LayerNorm
    gamma/beta and DistilBERT's layout; returns (encoder tensors, names of ignored non-encoder tensors)."""
    state, ignored = {}, []
    for key, tensor in checkpoint.items():
        name = next((key[len(p):] for p in PREFIXES if key.startswith(p)), key)
        if name.split(".")[0] not in ENCODER_ROOTS:
            ignored.append(key)  # a task head: cls.*, lm_head.*, classifier.*, ...
            continue
        if name in IGNORED_BUFFERS:
            continue
        for old, new in LEGACY_SUFFIXES.items():
            if name.endswith(old):
                name = name[: -len(old)] + new
        state[rename(name, KEY_MAPS[model_type])] = tensor
    return state, ignored


def check_state(model: Encoder, state: dict, path: Path, ignored: list) -> None:
    """Raise one ValueError naming every missing, unexpected and mis-shaped tensor."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [f"{k} {tuple(state[k].shape)} (config.json implies {expected[k]})"
                 for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {summarize(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {summarize(unexpected)}")
    if misshaped:
        problems.append(f"wrong shape {len(misshaped)}: {'; '.join(misshaped)}")
    if problems:
        note = f" (ignored as not encoder: {summarize(ignored)})" if ignored and missing else ""
        raise ValueError(f"{path}: does not fit the {model.config.model_type} encoder of config.json: "
                         f"{'; '.join(problems)}{note}")


def summarize(keys: list) -> str:
    """Tensor names with layer indices folded: `encoder.layer.{0,1,2}.output.dense.weight`."""
    groups = {}
    for key in keys:
        index = re.findall(r"\.(\d+)\.", key)[:1]
        groups.setdefault(re.sub(r"\.(\d+)\.", ".{}.", key, count=1), []).append(index[0] if index else "")
    parts = [t.format(i[0] if len(i) == 1 else "{" + ",".join(i) + "}") for t, i in groups.items()]
    return ", ".join(parts)


def first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
