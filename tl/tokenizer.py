"""The tokenizer: a `tokenizers.Tokenizer` from a checkpoint folder's `tokenizer.json`, else BERT's WordPiece
(`vocab.txt`) or RoBERTa's byte-level BPE (`vocab.json` + `merges.txt`) from tokenizers' own implementations.

Pairs get the model's special tokens, truncation is longest-first to `max_len`, nothing is padded (batching
pads, tl/data.py; all-MiniLM-L6-v2's tokenizer.json pads to 128). `lowercase=True` is the authors'
`--do_lower_case` (orionw/MTLvsIFT `run_glue.py`): their pinned transformers (d426b58, requirements.txt)
lowercased the text outside special tokens, for cased vocabularies (RoBERTa) too. Imports nothing from tl.
"""
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Optional

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import AddedToken, BertWordPieceTokenizer, ByteLevelBPETokenizer, models, processors

# special tokens when tokenizer_config.json does not name them (transformers' BertTokenizer, RobertaTokenizer)
WORDPIECE_SPECIALS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                      "cls_token": "[CLS]", "mask_token": "[MASK]"}
BPE_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}


class Tokenizer:
    """`encode(a, b=None, max_len=128) -> (ids, type_ids)`; `encode_batch`; `pad_id`; `fingerprint`; `save`."""

    def __init__(self, tokenizer: HFTokenizer, pad_id: int, lowercase: bool = False):
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tok = tokenizer
        self.pad_id = pad_id
        self.lowercase = lowercase
        specials = sorted({t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}, key=len,
                          reverse=True)  # longest first; the group below keeps them in re.split's output
        self._specials = re.compile(f"({'|'.join(map(re.escape, specials))})") if specials else None
        # tl/data.py's cache key: taken before truncation is switched on; lowercasing changes the ids
        settings = tokenizer.to_str() + ("\nlowercase" if lowercase else "")
        self.fingerprint = hashlib.sha256(settings.encode()).hexdigest()

    @classmethod
    def from_checkpoint(cls, folder, lowercase: bool = False) -> "Tokenizer":
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such model folder")
        config = read_json(folder / "tokenizer_config.json")
        # role -> token; tokenizer_config.json writes a token as a string or as {"content": ...}
        specials = {k: v.get("content") if isinstance(v, dict) else v
                    for k, v in (read_json(folder / "special_tokens_map.json") | config).items()}
        if (folder / "tokenizer.json").is_file():
            try:
                tok = HFTokenizer.from_file(str(folder / "tokenizer.json"))
            except Exception as e:  # tokenizers raises a bare Exception on malformed files
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise ValueError(f"{folder / 'tokenizer.json'}: cannot be read ({reason})") from None
        elif (folder / "vocab.txt").is_file():
            tok = wordpiece(folder / "vocab.txt", config, specials)
        elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            tok = byte_level_bpe(folder / "vocab.json", folder / "merges.txt", specials)
        else:
            raise FileNotFoundError(f"{folder}: no tokenizer.json, vocab.txt, or vocab.json + merges.txt")
        return cls(tok, pad_id=find_pad_id(tok, specials, folder), lowercase=lowercase)

    def prepare(self, text: Optional[str]) -> Optional[str]:
        """The text as it is tokenized: lowercased outside special tokens when `lowercase`."""
        if not self.lowercase or text is None:
            return text
        pieces = self._specials.split(text) if self._specials else [text]  # text, special, text, ...
        return "".join(piece if i % 2 else lower_chars(piece) for i, piece in enumerate(pieces))

    def encode(self, a: str, b: Optional[str] = None, max_len: int = 128) -> tuple[list, list]:
        """Token ids and token type ids of one sentence or pair, special tokens included."""
        return self.encode_batch([a], None if b is None else [b], max_len)[0]

    def encode_batch(self, list_a: list, list_b: Optional[list] = None, max_len: int = 128) -> list:
        """`encode` over many examples at once, in parallel (the Rust batch path)."""
        if list_b is not None and len(list_b) != len(list_a):
            raise ValueError(f"encode_batch: {len(list_a)} first sentences but {len(list_b)} second ones")
        if (self._tok.truncation or {}).get("max_length") != max_len:  # counts the special tokens, as in transformers
            self._tok.enable_truncation(max_len, strategy="longest_first")
        list_a = [self.prepare(a) for a in list_a]
        inputs = list_a if list_b is None else list(zip(list_a, [self.prepare(b) for b in list_b]))
        return [(e.ids, e.type_ids) for e in self._tok.encode_batch(inputs)]

    def save(self, folder) -> Path:
        """Write `folder/tokenizer.json` (no padding, no truncation) atomically."""
        self._tok.no_truncation()
        path = Path(folder) / "tokenizer.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_name("tokenizer.json.tmp").write_text(self._tok.to_str())
        os.replace(path.with_name("tokenizer.json.tmp"), path)
        return path


def lower_chars(text: str) -> str:
    """`str.lower` of each character alone, as transformers' `lowercase_text` did (regex `.+?` per
    character): a final capital sigma becomes "σ", not the "ς" of `text.lower()`."""
    return text.lower() if text.isascii() else "".join(map(str.lower, text))


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def wordpiece(vocab_txt: Path, config: dict, specials: dict) -> HFTokenizer:
    """BERT's WordPiece (tokenizers' BertWordPieceTokenizer), giving the ids of transformers' BertTokenizer."""
    names = {k: specials.get(k) or v for k, v in WORDPIECE_SPECIALS.items()}
    vocab = models.WordPiece.read_file(str(vocab_txt))
    for role, token in names.items():
        if token not in vocab:
            raise ValueError(f"{vocab_txt}: has no {role} {token!r}")
    bert = BertWordPieceTokenizer(
        vocab, **names, handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        strip_accents=config.get("strip_accents"), lowercase=config.get("do_lower_case", True))
    return HFTokenizer.from_str(bert.to_str())  # its Tokenizer is private (`_tokenizer`); to_str is public


def byte_level_bpe(vocab_json: Path, merges_txt: Path, specials: dict) -> HFTokenizer:
    """RoBERTa's byte-level BPE, as transformers' RobertaTokenizer: `<s> A </s></s> B </s>`, type ids 0."""
    names = {k: specials.get(k) or v for k, v in BPE_SPECIALS.items()}
    vocab, merges = models.BPE.read_file(str(vocab_json), str(merges_txt))
    for role, token in names.items():
        if token not in vocab:
            raise ValueError(f"{vocab_json}: has no {role} {token!r}")
    tok = HFTokenizer.from_str(ByteLevelBPETokenizer(vocab, merges, add_prefix_space=False).to_str())
    cls, sep = names["cls_token"], names["sep_token"]
    tok.post_processor = processors.RobertaProcessing((sep, vocab[sep]), (cls, vocab[cls]),
                                                      trim_offsets=True, add_prefix_space=False)
    # RoBERTa's mask token swallows the space before it (lstrip), as in RobertaTokenizer
    tok.add_special_tokens([AddedToken(t, lstrip=t == names["mask_token"]) for t in dict.fromkeys(names.values())])
    return tok


def find_pad_id(tok: HFTokenizer, specials: dict, folder: Path) -> int:
    """The padding token's id: tokenizer_config.json's pad_token, else tokenizer.json's padding, else [PAD]/<pad>."""
    for token in (specials.get("pad_token"), (tok.padding or {}).get("pad_token"), "[PAD]", "<pad>"):
        if token is not None and tok.token_to_id(token) is not None:
            return tok.token_to_id(token)
    raise ValueError(f"{folder}: the tokenizer has no padding token; name one as pad_token in tokenizer_config.json")
