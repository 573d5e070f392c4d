"""Task heads and the multi-task model: one shared Encoder, heads shared by task or by label count.

Each head has its family's form in Hugging Face's `*ForSequenceClassification` (what `run_glue.py` trains).
Sharing by label count is the authors' rule (orionw/MTLvsIFT `huggingface_extensions.py`): heads `classifier`
(2-way), `mclassifier` (3-way), `regression` (tl adds `classifier<n>`), each shared by every task with that
count; they used RoBERTa's head for BERT too, tl keeps each family's own. Notation: B rows, T tokens, H hidden
size, C classes. Imports nothing from tl: the encoder is duck-typed (`.config`, `.pooler`, called as
`encoder(input_ids, attention_mask, token_type_ids)`), so this file works copied beside model.py alone.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

INIT_STD = 0.02  # Hugging Face's default `initializer_range`, as its `_init_weights` uses it
# per family: transformers' class, the prefix of our head's keys in it, its config key of the head's dropout
HF_CLASSIFIERS = {"bert": ("BertForSequenceClassification", "", "classifier_dropout"),
                  "roberta": ("RobertaForSequenceClassification", "classifier.", "classifier_dropout"),
                  "distilbert": ("DistilBertForSequenceClassification", "", "seq_classif_dropout")}


@dataclass(frozen=True)
class HeadSpec:
    """What a head predicts: `num_labels` classes, or one real value when `regression`."""

    task: str
    num_labels: int
    regression: bool = False

    def __post_init__(self):
        if self.regression and self.num_labels != 1:
            raise ValueError(f"head {self.task}: a regression head has num_labels=1, got {self.num_labels}")
        if not self.regression and self.num_labels < 2:
            raise ValueError(f"head {self.task}: a classification head needs >= 2 labels, got {self.num_labels}")


def _linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.normal_(layer.weight, std=INIT_STD)
    nn.init.zeros_(layer.bias)
    return layer


def bert_head(hidden: int, num_labels: int, dropout: float) -> nn.Sequential:
    """pooled [CLS] (B, H) -> dropout -> classifier (B, C); the pooler lives in the shared encoder."""
    return nn.Sequential(OrderedDict(dropout=nn.Dropout(dropout), classifier=_linear(hidden, num_labels)))


def roberta_head(hidden: int, num_labels: int, dropout: float) -> nn.Sequential:
    """<s> (B, H) -> dropout -> dense -> tanh -> dropout -> out_proj (B, C), as RobertaClassificationHead."""
    return nn.Sequential(OrderedDict(dropout=nn.Dropout(dropout), dense=_linear(hidden, hidden), tanh=nn.Tanh(),
                                     dropout_out=nn.Dropout(dropout), out_proj=_linear(hidden, num_labels)))


def distilbert_head(hidden: int, num_labels: int, dropout: float) -> nn.Sequential:
    """[CLS] (B, H) -> pre_classifier -> ReLU -> dropout -> classifier (B, C), as in DistilBERT's classifier."""
    return nn.Sequential(OrderedDict(pre_classifier=_linear(hidden, hidden), relu=nn.ReLU(),
                                     dropout=nn.Dropout(dropout), classifier=_linear(hidden, num_labels)))


HEADS = {"bert": bert_head, "roberta": roberta_head, "distilbert": distilbert_head}


def label_count_key(spec: HeadSpec) -> str:
    """The head a task uses when heads are shared by label count (the authors' three heads)."""
    return {1: "regression", 2: "classifier", 3: "mclassifier"}.get(spec.num_labels, f"classifier{spec.num_labels}")


class MultiTaskModel(nn.Module):
    """An Encoder shared by all tasks plus `heads[head_key(t)]`, one head per task (share="task") or per
    label count (share="label_count"); `specs[t]` is task id t of the batches."""

    def __init__(self, encoder: nn.Module, specs: list[HeadSpec], share: str = "task"):
        super().__init__()
        config = encoder.config
        if config.model_type not in HEADS:
            raise ValueError(f"no task head for model_type {config.model_type!r}; known: {sorted(HEADS)}")
        if config.model_type == "bert" and encoder.pooler is None:
            raise ValueError("BERT heads classify the pooled [CLS]; this checkpoint has no pooler weights")
        if len({s.task for s in specs}) != len(specs):
            raise ValueError(f"duplicate task heads: {[s.task for s in specs]}")
        if share not in ("task", "label_count"):
            raise ValueError(f"share must be 'task' or 'label_count', got {share!r}")
        self.encoder = encoder
        self.specs = list(specs)
        self.share = share
        make_head, dropout = HEADS[config.model_type], config.hidden_dropout_prob
        sizes = {self.head_key(t): s.num_labels for t, s in enumerate(self.specs)}  # one head per key
        self.heads = nn.ModuleDict({k: make_head(config.hidden_size, n, dropout) for k, n in sizes.items()})

    def head_key(self, task: int) -> str:
        """The key in `heads` of task id `task`'s head."""
        return self.specs[task].task if self.share == "task" else label_count_key(self.specs[task])

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, H) last hidden state -> (B, H) what the heads read."""
        return self.encoder.pooler(hidden) if self.encoder.config.model_type == "bert" else hidden[:, 0]

    def forward(self, input_ids, attention_mask, token_type_ids=None, task_ids=None):
        """[(task id, row indices, outputs (n, C))] for the tasks in the batch; `task_ids` (B,) default 0:
        the encoder runs once over rows of different tasks, each task's head reads its own rows."""
        feats = self.features(self.encoder(input_ids, attention_mask, token_type_ids))  # (B, H)
        if task_ids is None:
            task_ids = torch.zeros(len(feats), dtype=torch.long, device=feats.device)
        rows = [(task_ids == t).nonzero(as_tuple=True)[0] for t in range(len(self.specs))]
        return [(t, r, self.heads[self.head_key(t)](feats[r])) for t, r in enumerate(rows) if len(r)]

    def losses(self, batch: dict) -> torch.Tensor:
        """(B,) fp32 per-example losses (cross-entropy, or squared error for regression); tl/train.py weighs them."""
        labels = batch["labels"]
        per = labels.new_zeros(len(labels), dtype=torch.float32)
        covered = 0
        for t, rows, out in self.forward(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                                         batch["task_ids"]):
            if self.specs[t].regression:
                row_loss = F.mse_loss(out.float().squeeze(-1), labels[rows].float(), reduction="none")
            else:
                row_loss = F.cross_entropy(out.float(), labels[rows].long(), reduction="none")
            per = per.index_copy(0, rows, row_loss)  # out of place: gradients flow to row_loss
            covered += len(rows)
        if covered != len(labels):
            raise ValueError(f"losses: {len(labels) - covered} rows have a task id outside 0..{len(self.specs) - 1}")
        return per

    def hf_classifier(self, task: int = 0, labels=None) -> tuple[dict, dict]:
        """(config.json dict, tensors) of task `task` as transformers' `*ForSequenceClassification`, with
        `id2label` from `labels` (default LABEL_0, ...); no pooler where their classifier reads the first token."""
        spec, config = self.specs[task], self.encoder.config.to_dict()
        kind = config["model_type"]
        architecture, prefix, dropout_key = HF_CLASSIFIERS[kind]
        tensors = {f"{kind}.{k}": v for k, v in self.encoder.checkpoint_state().items()
                   if kind == "bert" or not k.startswith("pooler.")}
        tensors |= {prefix + k: v for k, v in self.heads[self.head_key(task)].state_dict().items()}
        labels = ["score"] if spec.regression else list(labels or [f"LABEL_{i}" for i in range(spec.num_labels)])
        config.update(architectures=[architecture], id2label=dict(enumerate(labels)),
                      label2id={label: i for i, label in enumerate(labels)},
                      problem_type="regression" if spec.regression else "single_label_classification",
                      **{dropout_key: self.encoder.config.hidden_dropout_prob})
        return config, {k: v.detach().contiguous().cpu() for k, v in tensors.items()}

    def save_heads(self, directory: Path) -> None:
        """Write `heads.safetensors` (keys `<head key>.<param>`) and `heads.json` (specs and share mode)."""
        directory = Path(directory)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.heads.state_dict().items()},
                  str(directory / "heads.safetensors.tmp"))
        config = {"share": self.share, "specs": [asdict(s) for s in self.specs]}
        (directory / "heads.json.tmp").write_text(json.dumps(config, indent=1))
        for name in ("heads.safetensors", "heads.json"):
            os.replace(directory / f"{name}.tmp", directory / name)  # atomic: never a half-written file

    def load_heads(self, directory: Path, mapping: dict[str, str] | None = None) -> list[str]:
        """The keys of the heads copied from saved ones (`mapping` {own key: saved key}, default each its own;
        STILTs starts the target's from the support's); a head missing or of another shape stays as it was."""
        saved = load_file(str(Path(directory) / "heads.safetensors"))
        loaded = []
        for key, source in (mapping if mapping is not None else {k: k for k in self.heads}).items():
            own = self.heads[key].state_dict() if key in self.heads else {}
            state = {name: saved.get(f"{source}.{name}") for name in own}
            if own and all(v is not None and v.shape == own[name].shape for name, v in state.items()):
                self.heads[key].load_state_dict(state)
                loaded.append(key)
        return loaded


def read_head_config(directory: Path) -> tuple[list[HeadSpec], str]:
    """The HeadSpecs and share mode a `save_heads` folder was written with (a bare list: one head per task)."""
    saved = json.loads((Path(directory) / "heads.json").read_text())
    saved = {"share": "task", "specs": saved} if isinstance(saved, list) else saved
    return [HeadSpec(**s) for s in saved["specs"]], saved["share"]
