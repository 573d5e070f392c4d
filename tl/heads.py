"""Task heads and the multi-task model: one shared Encoder, heads shared by task or by label count.

Imports nothing from tl: the encoder is duck-typed (`.config`, `.pooler`, called as
`encoder(input_ids, attention_mask, token_type_ids)`), so this file works copied beside model.py alone.

Each head has its model family's own form, as in Hugging Face's `*ForSequenceClassification`, so a
single-task model fine-tuned here matches what `run_glue.py` would train:
- BERT: the encoder's pooler (dense + tanh over [CLS]) -> dropout -> `classifier` (Linear H -> C).
- RoBERTa: `<s>` -> dropout -> `dense` -> tanh -> dropout -> `out_proj` (the `classifier.*` keys of
  RobertaForSequenceClassification; RoBERTa checkpoints carry no trained pooler).
- DistilBERT: [CLS] -> `pre_classifier` -> ReLU -> dropout -> `classifier`.
A regression task (STS-B) is the same head with one output and a squared-error loss.

Sharing (`share=`): "task" gives every task its own head. "label_count" is the authors' rule
(orionw/MTLvsIFT `huggingface_extensions.py`, `*ForSequenceClassificationGLUE`): one head per label
count, `classifier` (2-way), `mclassifier` (3-way) and `regression`, shared by every task with that
count, so STILTs carries the support's trained head into a target with the same count. The authors
used RoBERTa's classification head (dense-tanh-out_proj over the first token, no pooler) for BERT as
well, and raised NotImplementedError for other counts; tl keeps the family's own head in both modes
and names other counts `classifier<n>`.

`MultiTaskModel` runs the encoder once over a batch whose rows may come from different tasks and
applies each task's head to its own rows (the heterogeneous batches of the paper). `losses` returns
one fp32 loss per row; the training loop weighs them (tl/train.py).

Notation: B batch rows, T tokens, H hidden size, C classes.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:  # duck-typed at run time, so heads.py works copied beside model.py alone
    from tl.model import Encoder

# Hugging Face's default `initializer_range`; heads are initialised as `_init_weights` does.
INIT_STD = 0.02
# transformers' classification class of each family: its name, its names of our head's modules, the
# config key of the head's dropout (tl's heads use the hidden dropout)
HF_CLASSIFIERS = {
    "bert": ("BertForSequenceClassification", {"classifier": "classifier"}, "classifier_dropout"),
    "roberta": ("RobertaForSequenceClassification", {"dense": "classifier.dense", "out_proj": "classifier.out_proj"},
                "classifier_dropout"),
    "distilbert": ("DistilBertForSequenceClassification", {"pre_classifier": "pre_classifier",
                                                           "classifier": "classifier"}, "seq_classif_dropout"),
}


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


class BertHead(nn.Module):
    """pooled [CLS] -> dropout -> classifier. The pooler lives in the (shared) encoder."""

    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = _linear(hidden, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # (B, H) -> (B, C)
        return self.classifier(self.dropout(pooled))


class RobertaHead(nn.Module):
    """<s> -> dropout -> dense -> tanh -> dropout -> out_proj (RobertaClassificationHead)."""

    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = _linear(hidden, hidden)
        self.out_proj = _linear(hidden, num_labels)

    def forward(self, first: torch.Tensor) -> torch.Tensor:  # (B, H) -> (B, C)
        x = torch.tanh(self.dense(self.dropout(first)))
        return self.out_proj(self.dropout(x))


class DistilBertHead(nn.Module):
    """[CLS] -> pre_classifier -> ReLU -> dropout -> classifier (DistilBertForSequenceClassification)."""

    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.pre_classifier = _linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.classifier = _linear(hidden, num_labels)

    def forward(self, first: torch.Tensor) -> torch.Tensor:  # (B, H) -> (B, C)
        return self.classifier(self.dropout(F.relu(self.pre_classifier(first))))


HEADS = {"bert": BertHead, "roberta": RobertaHead, "distilbert": DistilBertHead}


def label_count_key(spec: HeadSpec) -> str:
    """The head a task uses when heads are shared by label count (the authors' three heads)."""
    if spec.regression:
        return "regression"
    return {2: "classifier", 3: "mclassifier"}.get(spec.num_labels, f"classifier{spec.num_labels}")


SHARES = ("task", "label_count")


class MultiTaskModel(nn.Module):
    """An Encoder shared by all tasks plus `heads[head_key(t)]`; `specs[t]` is task id t of the batches.

    share="task": one head per task, under the task's name. share="label_count": one head per label
    count, shared by every task with that count (`label_count_key`)."""

    def __init__(self, encoder: "Encoder", specs: list[HeadSpec], share: str = "task"):
        super().__init__()
        config = encoder.config
        if config.model_type not in HEADS:
            raise ValueError(f"no task head for model_type {config.model_type!r}; known: {sorted(HEADS)}")
        if config.model_type == "bert" and encoder.pooler is None:
            raise ValueError("BERT heads classify the pooled [CLS]; this checkpoint has no pooler weights")
        if len({s.task for s in specs}) != len(specs):
            raise ValueError(f"duplicate task heads: {[s.task for s in specs]}")
        if share not in SHARES:
            raise ValueError(f"share must be one of {SHARES}, got {share!r}")
        self.encoder = encoder
        self.specs = list(specs)
        self.share = share
        head = HEADS[config.model_type]
        sizes = {self.head_key(t): s.num_labels for t, s in enumerate(self.specs)}  # one head per key
        self.heads = nn.ModuleDict({k: head(config.hidden_size, n, config.hidden_dropout_prob) for k, n in sizes.items()})

    def head_key(self, task: int) -> str:
        """The key in `heads` of task id `task`'s head."""
        spec = self.specs[task]
        return spec.task if self.share == "task" else label_count_key(spec)

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, H) last hidden state -> (B, H) what the heads read."""
        if self.encoder.config.model_type == "bert":
            return self.encoder.pooler(hidden)
        return hidden[:, 0]

    def forward(self, input_ids, attention_mask, token_type_ids=None, task_ids=None):
        """Returns a list with, for each task id, (row indices, outputs (n, C)); tasks absent from the
        batch are left out. `task_ids` (B,) defaults to all rows being task 0."""
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        feats = self.features(hidden)  # (B, H)
        if task_ids is None:
            task_ids = torch.zeros(len(feats), dtype=torch.long, device=feats.device)
        outputs = []
        for t in range(len(self.specs)):
            rows = (task_ids == t).nonzero(as_tuple=True)[0]
            if len(rows):
                outputs.append((t, rows, self.heads[self.head_key(t)](feats[rows])))
        return outputs

    def losses(self, batch: dict) -> torch.Tensor:
        """(B,) fp32 per-example losses in batch row order: cross-entropy, or squared error for a
        regression head. The caller weighs and sums them (tl/train.py)."""
        outs = self.forward(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), batch["task_ids"])
        labels = batch["labels"]
        per = labels.new_zeros(len(labels), dtype=torch.float32)
        covered = 0
        for t, rows, out in outs:
            gold = labels[rows]
            if self.specs[t].regression:
                row_loss = F.mse_loss(out.float().squeeze(-1), gold.float(), reduction="none")
            else:
                row_loss = F.cross_entropy(out.float(), gold.long(), reduction="none")
            per = per.index_copy(0, rows, row_loss)  # out of place: gradients flow to row_loss
            covered += len(rows)
        if covered != len(labels):
            raise ValueError(f"losses: {len(labels) - covered} rows have a task id outside 0..{len(self.specs) - 1}")
        return per

    # ---- persistence: heads.safetensors beside the encoder's model.safetensors ----

    def hf_classifier(self, task: int = 0, labels=None) -> tuple[dict, dict]:
        """(config.json dict, tensors) of task `task` as transformers' `*ForSequenceClassification`: the
        encoder under the family's prefix (`bert.`, ...; no pooler where their classifier reads the first
        token), the head under the class's names, `id2label` from `labels` (default LABEL_0, ...)."""
        spec, config = self.specs[task], self.encoder.config.to_dict()
        kind = config["model_type"]
        architecture, names, dropout_key = HF_CLASSIFIERS[kind]
        tensors = {f"{kind}.{k}": v for k, v in self.encoder.checkpoint_state().items()
                   if kind == "bert" or not k.startswith("pooler.")}
        for name, value in self.heads[self.head_key(task)].state_dict().items():
            module, _, param = name.rpartition(".")
            tensors[f"{names[module]}.{param}"] = value
        labels = ["score"] if spec.regression else list(labels or [f"LABEL_{i}" for i in range(spec.num_labels)])
        config.update(architectures=[architecture], id2label=dict(enumerate(labels)),
                      label2id={label: i for i, label in enumerate(labels)},
                      problem_type="regression" if spec.regression else "single_label_classification",
                      **{dropout_key: self.encoder.config.hidden_dropout_prob})
        return config, {k: v.detach().contiguous().cpu() for k, v in tensors.items()}

    def save_heads(self, directory: Path) -> None:
        """Write `heads.safetensors` (keys `<head key>.<param>`) and `heads.json` (specs and share mode)."""
        directory = Path(directory)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.heads.state_dict().items()}
        tmp = directory / "heads.safetensors.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, directory / "heads.safetensors")
        tmp = directory / "heads.json.tmp"
        tmp.write_text(json.dumps({"share": self.share, "specs": [asdict(s) for s in self.specs]}, indent=1))
        os.replace(tmp, directory / "heads.json")

    def load_heads(self, directory: Path, mapping: dict[str, str] | None = None) -> list[str]:
        """Copy saved heads into this model's; returns the head keys that were loaded.

        `mapping` {own head key: saved head key} (default: every head from its own key) lets STILTs
        start the target's head from the support's trained one; the recipe decides when (the authors:
        same label count; tl: same label strings). A head missing from the file, or of another
        shape, is left as initialised."""
        saved = load_file(str(Path(directory) / "heads.safetensors"))
        own = self.heads.state_dict()
        mapping = mapping if mapping is not None else {k: k for k in self.heads}
        loaded = []
        for key, source in mapping.items():
            names = [k for k in own if k.startswith(key + ".")]
            sources = [source + k[len(key):] for k in names]
            if names and all(src in saved and saved[src].shape == own[k].shape for k, src in zip(names, sources)):
                with torch.no_grad():
                    for k, src in zip(names, sources):
                        own[k].copy_(saved[src])
                loaded.append(key)
        return loaded


def read_head_config(directory: Path) -> tuple[list[HeadSpec], str]:
    """The HeadSpecs and share mode a `save_heads` folder was written with (older folders: a list of
    specs, one head per task)."""
    saved = json.loads((Path(directory) / "heads.json").read_text())
    if isinstance(saved, list):
        saved = {"share": "task", "specs": saved}
    return [HeadSpec(**s) for s in saved["specs"]], saved["share"]
