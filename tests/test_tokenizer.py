"""tl.tokenizer against transformers' tokenizers on real GLUE text: WordPiece (all-MiniLM-L6-v2, from
tokenizer.json and from vocab.txt) and byte-level BPE (vocab.json + merges.txt); no padding; fingerprints."""
import json
import shutil

import pytest
from tokenizers import ByteLevelBPETokenizer

from oracle import glue_pairs, glue_singles, hf_tokenizer
from tl.tokenizer import Tokenizer


def hf_encode(hf, a, b=None, max_len=128):
    out = hf(list(a), None if b is None else list(b), truncation="longest_first", max_length=max_len)
    types = out.get("token_type_ids") or [[0] * len(ids) for ids in out["input_ids"]]
    return list(zip(out["input_ids"], types))


@pytest.fixture(scope="module")
def glue_text(shared_glue):
    pairs = glue_pairs(shared_glue, 1500, seed=1)
    return [a for a, _ in pairs], [b for _, b in pairs], glue_singles(shared_glue, 1000, seed=1)


def test_minilm_ids_equal_transformers_on_glue(minilm_path, glue_text):
    a, b, singles = glue_text
    tok, hf = Tokenizer.from_checkpoint(minilm_path), hf_tokenizer(minilm_path)
    ours_pairs = tok.encode_batch(a, b, max_len=128)
    assert ours_pairs == hf_encode(hf, a, b)
    assert sum(len(ids) == 128 for ids, _ in ours_pairs) >= 10  # pairs truncated at 128 are covered
    assert tok.encode_batch(singles) == hf_encode(hf, singles)
    # a short max_len truncates most pairs; longest-first must pick the same tokens to drop
    assert tok.encode_batch(a[:500], b[:500], max_len=24) == hf_encode(hf, a[:500], b[:500], max_len=24)
    assert [tok.encode(x, y) for x, y in zip(a[:50], b[:50])] == ours_pairs[:50]
    assert tok.pad_id == hf.pad_token_id == 0


def test_padding_baked_into_tokenizer_json_is_ignored(minilm_path):
    assert json.loads((minilm_path / "tokenizer.json").read_text())["padding"] is not None  # pads to 128
    tok = Tokenizer.from_checkpoint(minilm_path)
    ids, types = tok.encode("hello world")
    assert ids == [101, 7592, 2088, 102] and types == [0, 0, 0, 0]
    assert len(tok.encode("word " * 300)[0]) == 128 and len(tok.encode("word " * 300, max_len=512)[0]) == 302


def test_vocab_txt_builds_the_same_wordpiece(minilm_path, glue_text, tmp_path):
    a, b, singles = glue_text
    shutil.copy(minilm_path / "vocab.txt", tmp_path)
    shutil.copy(minilm_path / "tokenizer_config.json", tmp_path)
    from_vocab, from_json = Tokenizer.from_checkpoint(tmp_path), Tokenizer.from_checkpoint(minilm_path)
    assert from_vocab.encode_batch(a, b) == from_json.encode_batch(a, b)
    assert from_vocab.encode_batch(singles) == from_json.encode_batch(singles)
    assert from_vocab.pad_id == 0


def test_vocab_txt_respects_do_lower_case(minilm_path, glue_text, tmp_path):
    a, b, _ = glue_text
    shutil.copy(minilm_path / "vocab.txt", tmp_path)
    config = json.loads((minilm_path / "tokenizer_config.json").read_text()) | {"do_lower_case": False}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    cased = Tokenizer.from_checkpoint(tmp_path)
    assert cased.encode("Hello")[0] != Tokenizer.from_checkpoint(minilm_path).encode("Hello")[0]
    assert cased.encode_batch(a[:300], b[:300]) == hf_encode(hf_tokenizer(tmp_path), a[:300], b[:300])


def test_byte_level_bpe_matches_roberta_tokenizer(glue_text, tmp_path):
    a, b, singles = glue_text
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(a + b, vocab_size=800, min_frequency=2, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])  # RoBERTa's ids 0..4
    bpe.save_model(str(tmp_path))
    tok, hf = Tokenizer.from_checkpoint(tmp_path), hf_tokenizer(tmp_path, "RobertaTokenizer")
    ours = tok.encode_batch(a[:500], b[:500], max_len=64)
    assert ours == hf_encode(hf, a[:500], b[:500], max_len=64)
    assert tok.encode_batch(singles[:500]) == hf_encode(hf, singles[:500])
    ids, types = ours[0]
    assert ids[0] == 0 and ids[-1] == 2 and [2, 2] == ids[ids.index(2):ids.index(2) + 2] and set(types) == {0}
    assert tok.pad_id == 1


def test_fingerprint_is_stable_and_tracks_settings(minilm_path, tmp_path):
    tok = Tokenizer.from_checkpoint(minilm_path)
    before = tok.fingerprint
    tok.encode_batch(["a b c"], max_len=5)
    assert len(before) == 64 and int(before, 16) >= 0
    assert Tokenizer.from_checkpoint(minilm_path).fingerprint == before == tok.fingerprint
    tok.save(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "tokenizer.json").read_text())
    assert saved["padding"] is None and saved["truncation"] is None
    again = Tokenizer.from_checkpoint(tmp_path / "saved")
    assert again.fingerprint == before and again.encode("Hello there", "friend") == tok.encode("Hello there", "friend")
    shutil.copy(minilm_path / "vocab.txt", tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    assert Tokenizer.from_checkpoint(tmp_path).fingerprint != before


def test_missing_tokenizer_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        Tokenizer.from_checkpoint(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as e:
        Tokenizer.from_checkpoint(tmp_path)
    message = str(e.value)
    assert "\n" not in message and str(tmp_path) in message and "vocab.txt" in message


@pytest.mark.parametrize("settings", [{"strip_accents": False, "tokenize_chinese_chars": False},
                                      {"do_lower_case": False, "strip_accents": True}])
def test_vocab_txt_normalizer_settings_match_bert_tokenizer(minilm_path, tmp_path, settings):
    shutil.copy(minilm_path / "vocab.txt", tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(settings))
    a = ["Héllo Wörld, naïve café", "中文字符 mixed with English 日本語", "tab\there\x00ctrl zero", "Ünïcödé ÅÉÎÕÜ"]
    ours = Tokenizer.from_checkpoint(tmp_path).encode_batch(a, a[::-1])
    assert ours == hf_encode(hf_tokenizer(tmp_path, "BertTokenizer"), a, a[::-1])
    assert ours != Tokenizer.from_checkpoint(minilm_path).encode_batch(a, a[::-1])  # the settings change ids


def test_vocab_txt_specials_from_the_configs(tmp_path):
    (tmp_path / "vocab.txt").write_text("<pad>\n<unk>\n<cls>\n<sep>\n<mask>\nhello\nworld\n##s\n")
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"mask_token": {"content": "<mask>"}}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"cls_token": "<cls>", "sep_token": "<sep>", "pad_token": "<pad>", "unk_token": "<unk>"}))
    tok = Tokenizer.from_checkpoint(tmp_path)
    assert tok.encode("Hello worlds", "<mask> x") == ([2, 5, 6, 7, 3, 4, 1, 3], [0, 0, 0, 0, 0, 1, 1, 1])
    assert tok.pad_id == 0
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"unk_token": "<unk>"}))
    with pytest.raises(ValueError) as e:
        Tokenizer.from_checkpoint(tmp_path)
    assert str(e.value) == f"{tmp_path / 'vocab.txt'}: has no sep_token '[SEP]'"


def test_byte_level_bpe_mask_swallows_the_space_before_it(tmp_path):
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, "a": 5, "Ġ": 6, "b": 7, "Ġb": 8}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\nĠ b\n", encoding="utf-8")
    tok = Tokenizer.from_checkpoint(tmp_path)
    assert tok.encode("a <mask> b", "b") == ([0, 5, 4, 8, 2, 2, 7, 2], [0] * 8)  # no "Ġ" (6) before <mask>
    del vocab["<mask>"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ValueError) as e:
        Tokenizer.from_checkpoint(tmp_path)
    assert str(e.value) == f"{tmp_path / 'vocab.json'}: has no mask_token '<mask>'"


# ---- lowercase=True: the authors' --do_lower_case (non-special text lowercased, special tokens kept)

def test_lowercase_keeps_special_tokens_of_uncased_minilm(minilm_path):
    plain, lower = Tokenizer.from_checkpoint(minilm_path), Tokenizer.from_checkpoint(minilm_path, lowercase=True)
    assert lower.prepare("Hello [SEP] World [MASK]s") == "hello [SEP] world [MASK]s"
    ids = lower.encode("Hello [SEP] World", "It's [MASK]")[0]
    assert ids == plain.encode("hello [SEP] world", "it's [MASK]")[0]
    assert ids.count(102) == 3 and 103 in ids  # [SEP] written in the text stays [SEP]
    assert ids != plain.encode("hello [sep] world", "it's [mask]")[0]  # lowercasing it would split it
    # the vocabulary is uncased: on plain text lowercasing changes nothing, but the cache key changes
    assert lower.encode_batch(["An Example"], ["OK"]) == plain.encode_batch(["An Example"], ["OK"])
    assert lower.fingerprint != plain.fingerprint == Tokenizer.from_checkpoint(minilm_path).fingerprint
    assert lower.fingerprint == Tokenizer.from_checkpoint(minilm_path, lowercase=True).fingerprint


@pytest.fixture()
def cased_bpe(glue_text, tmp_path):
    """A small RoBERTa-style byte-level BPE trained on cased GLUE text: case changes its ids."""
    a, b, _ = glue_text
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(a + b, vocab_size=600, min_frequency=2, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(tmp_path))
    return tmp_path


def test_lowercase_on_a_cased_tokenizer(cased_bpe, glue_text):
    a, b, singles = glue_text
    plain, lower = Tokenizer.from_checkpoint(cased_bpe), Tokenizer.from_checkpoint(cased_bpe, lowercase=True)
    ours = lower.encode_batch(a[:300], b[:300], max_len=64)
    assert ours == plain.encode_batch([x.lower() for x in a[:300]], [y.lower() for y in b[:300]], max_len=64)
    assert ours != plain.encode_batch(a[:300], b[:300], max_len=64)  # the vocabulary is cased
    assert lower.encode_batch(singles[:300]) == plain.encode_batch([x.lower() for x in singles[:300]])
    # special tokens written in the text keep their ids; the text around them is lowercased
    ids = lower.encode("The <mask> Was HERE</s>")[0]
    assert ids == plain.encode("the <mask> was here</s>")[0]
    assert 4 in ids and ids.count(2) == 2
    assert ids != plain.encode("The <mask> Was HERE</s>")[0]
    assert lower.fingerprint != plain.fingerprint


def test_lowercase_one_character_at_a_time():
    """transformers' lowercase_text lowered each character alone: a word-final capital sigma gives "σ"."""
    from tl.tokenizer import lower_chars
    assert "ΟΔΟΣ".lower() == "οδος" and lower_chars("ΟΔΟΣ Ab") == "οδοσ ab"
    assert lower_chars("ÉCOLE İ") == "école i̇" and lower_chars("ABC") == "abc"
