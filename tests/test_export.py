"""tools/export_hf.py and `tools/train.py --export-hf`: a tl model folder becomes a transformers
`*ForSequenceClassification` with its trained head, labels and problem type, whose outputs equal tl's
to 1e-5. The oracle is transformers itself: the real all-MiniLM-L6-v2 (BERT) on real text, tiny random
RoBERTa and DistilBERT configs (tests/oracle.py), heads per task and per label count (the authors' rule)."""
import json
import re
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from oracle import tiny_config  # noqa: E402

from tl.heads import HF_CLASSIFIERS, HeadSpec, MultiTaskModel, read_head_config  # noqa: E402
from tl.model import Encoder, EncoderConfig  # noqa: E402
from tl.tokenizer import Tokenizer  # noqa: E402
from tl.train import save_model  # noqa: E402
from helpers import load_tool  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"


export_tool = load_tool("export_hf")


def trained_like(encoder: Encoder, specs: list, share: str = "task", seed: int = 1) -> MultiTaskModel:
    """A model whose heads are not the init's (a zero bias would hide a bias left behind)."""
    model = MultiTaskModel(encoder, specs, share=share).eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.heads.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return model


def tl_logits(model: MultiTaskModel, task: int, ids, mask, types) -> torch.Tensor:
    with torch.no_grad():
        [(_, rows, out)] = model(ids, mask, types, torch.full((len(ids),), task))
    return out


def hf_load(folder: Path):
    model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        folder, output_loading_info=True, attn_implementation="sdpa", dtype=torch.float32)
    return model.eval(), info


def test_minilm_best_folder_loads_in_transformers_with_its_head(tmp_path, minilm_path):
    """A run's best/ as tl.train.save_model writes it (encoder, heads, tokenizer), exported: nothing
    missing or unexpected, RTE's labels, and tl's logits on real sentence pairs to 1e-5."""
    tok = Tokenizer.from_checkpoint(minilm_path)
    model = trained_like(Encoder.from_pretrained(minilm_path), [HeadSpec("RTE", 2)])
    save_model(model, tmp_path / "best", {"step": 1}, tok)
    out = tmp_path / "rte-hf"
    assert export_tool.main([str(tmp_path / "best"), str(out)]) == 0
    hf, info = hf_load(out)
    assert type(hf).__name__ == "BertForSequenceClassification"
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert hf.config.id2label == {0: "entailment", 1: "not_entailment"} and hf.config.num_labels == 2
    assert hf.config.label2id == {"entailment": 0, "not_entailment": 1}
    assert hf.config.problem_type == "single_label_classification"
    pairs = [("A man is playing a guitar on stage.", "A person plays music."), ("It rained all day.", "The sun shone.")]
    rows = [tok.encode(a, b, max_len=64) for a, b in pairs]
    T = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([list(i) + [tok.pad_id] * (T - len(i)) for i, _ in rows])
    types = torch.tensor([list(t) + [0] * (T - len(t)) for _, t in rows])
    mask = (torch.arange(T)[None] < torch.tensor([len(i) for i, _ in rows])[:, None]).long()
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    torch.testing.assert_close(theirs, tl_logits(model, 0, ids, mask, types), atol=1e-5, rtol=1e-5)
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)  # the tokenizer came along
    assert hf_tok(*pairs[0])["input_ids"] == list(rows[0][0])
    # a single-task run's best/ as save_best writes it loads as it is, head and labels included
    save_model(model, tmp_path / "run-best", {"step": 1}, tok,
               classifier=model.hf_classifier(0, ["entailment", "not_entailment"]))
    direct, info = hf_load(tmp_path / "run-best")
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert direct.config.id2label == {0: "entailment", 1: "not_entailment"}
    with torch.no_grad():
        logits = direct(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    torch.testing.assert_close(logits, tl_logits(model, 0, ids, mask, types), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_type, share, task, labels", [
    ("roberta", "task", "MNLI", {0: "contradiction", 1: "entailment", 2: "neutral"}),
    ("distilbert", "task", "STS-B", {0: "score"}),
    ("roberta", "label_count", "STS-B", {0: "score"}),  # the authors' shared `regression` head
    ("bert", "label_count", "MRPC", {0: "0", 1: "1"}),  # the shared 2-way `classifier`, MRPC's label strings
])
def test_tiny_models_of_every_family(tmp_path, model_type, share, task, labels):
    encoder = Encoder(EncoderConfig.from_dict(tiny_config(model_type, hidden_dropout_prob=0.0,
                                                          attention_probs_dropout_prob=0.0)))
    specs = [HeadSpec("MRPC", 2), HeadSpec("MNLI", 3), HeadSpec("STS-B", 1, regression=True)]
    model = trained_like(encoder, specs, share)
    encoder.save_pretrained(tmp_path / "best")
    model.save_heads(tmp_path / "best")
    with pytest.raises(ValueError, match="say which task"):  # three heads: the task must be named
        export_tool.classification_checkpoint(tmp_path / "best")
    export_tool.export(tmp_path / "best", tmp_path / "hf", task.lower())
    hf, info = hf_load(tmp_path / "hf")
    assert type(hf).__name__ == HF_CLASSIFIERS[model_type][0]
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert hf.config.id2label == labels
    assert hf.config.problem_type == ("regression" if task == "STS-B" else "single_label_classification")
    ids = torch.randint(2, 99, (3, 7))
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])
    ids = ids.masked_fill(mask == 0, encoder.config.pad_token_id)
    types = torch.zeros_like(ids)
    kwargs = {} if model_type == "distilbert" else {"token_type_ids": types}
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, **kwargs).logits
    mine = tl_logits(model, [s.task for s in specs].index(task), ids, mask, types)
    torch.testing.assert_close(theirs, mine, atol=1e-5, rtol=1e-5)


def test_bad_folders_and_tasks_are_one_line_errors(tmp_path, capsys):
    assert export_tool.main([str(tmp_path), str(tmp_path / "out")]) == 2
    assert "no heads.json" in capsys.readouterr().err
    encoder = Encoder(EncoderConfig.from_dict(tiny_config("bert")))
    encoder.save_pretrained(tmp_path / "best")
    MultiTaskModel(encoder, [HeadSpec("RTE", 2)]).save_heads(tmp_path / "best")
    assert export_tool.main([str(tmp_path / "best"), str(tmp_path / "out"), "--task", "mrpc"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "has no head for mrpc; it holds RTE" in err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert export_tool.main([str(tmp_path / "best"), str(tmp_path / "mine")]) == 2  # never replaces other files
    assert "not an exported model" in capsys.readouterr().err and (tmp_path / "mine" / "notes.txt").exists()


def test_train_export_hf_trains_then_exports_the_asked_run(tmp_path, capsys, minilm_path, monkeypatch):
    """`tools/train.py ... --export-hf DIR`: the run named by the flags (one seed), its target's head."""
    monkeypatch.setenv("TL_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = tmp_path / "tiny"
    Encoder(EncoderConfig.from_dict(tiny_config("bert", vocab_size=30522))).save_pretrained(model)
    Tokenizer.from_checkpoint(minilm_path).save(model)
    train_tool = load_tool("train")
    flags = ["--mode", "single", "--tasks", "rte", "--model", str(model), "--data-dir", str(SAMPLES),
             "--results-dir", str(tmp_path / "results"), "--limit-train", "16", "--max-steps", "2",
             "--batch-size", "8", "--epochs", "1", "--evals-per-epoch", "1", "--device", "cpu",
             "--max-len", "32"]
    with pytest.raises(SystemExit) as e:  # five seeds are five runs: which one?
        train_tool.main(flags + ["--export-hf", str(tmp_path / "hf")])
    assert e.value.code == 2 and "give one --seeds" in capsys.readouterr().err
    assert train_tool.main(flags + ["--seeds", "3", "--export-hf", str(tmp_path / "hf")]) == 0
    out, err = capsys.readouterr()
    assert "\r" not in err and "\x1b" not in err  # no progress bar off a terminal: plain lines for log files
    assert re.search(r"^step 2 epoch 1.00 loss [0-9.]+ \| RTE [0-9.]+$", out, re.M)  # one line per evaluation
    record = json.loads((tmp_path / "results" / "single__rte__lim16__s3" / "record.json").read_text())
    assert f"exported RTE: {tmp_path / 'hf'}" in out
    assert f"RTE dev {record['best']['RTE']['score']:.2f} (majority class {record['majority']['RTE']:.2f})" in out
    hf, info = hf_load(tmp_path / "hf")
    assert hf.config.id2label == {0: "entailment", 1: "not_entailment"} and not info["missing_keys"]
    # the single-task run's own best/ loads in transformers as it is, trained head included, and tl reads
    # the same folder back (encoder from model.safetensors, head from heads.safetensors): equal outputs
    best = tmp_path / "results" / "single__rte__lim16__s3" / "best"
    direct, info = hf_load(best)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert direct.config.id2label == {0: "entailment", 1: "not_entailment"}
    specs, share = read_head_config(best)
    mine = MultiTaskModel(Encoder.from_pretrained(best), specs, share).eval()
    assert mine.load_heads(best) == ["RTE"]
    ids = torch.randint(1000, 2000, (3, 9))
    mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3, [1] * 4 + [0] * 5])
    types = torch.zeros_like(ids)
    with torch.no_grad():
        theirs = direct(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        exported = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    torch.testing.assert_close(theirs, exported, atol=0, rtol=0)
    torch.testing.assert_close(theirs, tl_logits(mine, 0, ids, mask, types), atol=1e-5, rtol=1e-5)
