"""Task heads and the multi-task model: one shared Encoder, one small head per task.

Each head has its model family's own form, as in Hugging Face's `*ForSequenceClassification`, so a
single-task model fine-tuned here matches what `run_glue.py` would train:
- BERT: the encoder's pooler (dense + tanh over [CLS]) -> dropout -> `classifier` (Linear H -> C).
- RoBERTa: `<s>` -> dropout -> `dense` -> tanh -> dropout -> `out_proj` (the `classifier.*` keys of
  RobertaForSequenceClassification; RoBERTa checkpoints carry no trained pooler).
- DistilBERT: [CLS] -> `pre_classifier` -> ReLU -> dropout -> `classifier`.
A regression task (STS-B) is the same head with one output and a mean-squared-error loss.

`MultiTaskModel` runs the encoder once over a batch whose rows may come from different tasks and
applies each head to its own rows (the heterogeneous batches of the paper). Its loss is the *sum* of
per-example losses; the training loop divides by the number of examples in the whole optimizer step
(STYLE.md principle 9), so every example weighs the same whatever its task, micro-batch or rank.

Notation: B batch rows, T tokens, H hidden size, C classes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tl.model import Encoder

# Hugging Face's default `initializer_range`; heads are initialised as `_init_weights` does.
INIT_STD = 0.02


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


class MultiTaskModel(nn.Module):
    """An Encoder shared by all tasks plus `heads[task]`; `specs[i]` is task id i of the batches."""

    def __init__(self, encoder: Encoder, specs: list[HeadSpec]):
        super().__init__()
        config = encoder.config
        if config.model_type not in HEADS:
            raise ValueError(f"no task head for model_type {config.model_type!r}; known: {sorted(HEADS)}")
        if config.model_type == "bert" and encoder.pooler is None:
            raise ValueError("BERT heads classify the pooled [CLS]; this checkpoint has no pooler weights")
        if len({s.task for s in specs}) != len(specs):
            raise ValueError(f"duplicate task heads: {[s.task for s in specs]}")
        self.encoder = encoder
        self.specs = list(specs)
        head = HEADS[config.model_type]
        dropout = config.hidden_dropout_prob
        self.heads = nn.ModuleDict({s.task: head(config.hidden_size, s.num_labels, dropout) for s in specs})

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
        for t, spec in enumerate(self.specs):
            rows = (task_ids == t).nonzero(as_tuple=True)[0]
            if len(rows):
                outputs.append((t, rows, self.heads[spec.task](feats[rows])))
        return outputs

    def loss_sum(self, batch: dict) -> tuple[torch.Tensor, int]:
        """Sum of per-example losses over the batch (cross-entropy or squared error, in fp32) and the
        number of examples it covers."""
        outs = self.forward(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), batch["task_ids"])
        labels = batch["labels"]
        total = labels.new_zeros((), dtype=torch.float32)
        for t, rows, logits in outs:
            gold = labels[rows]
            if self.specs[t].regression:
                total = total + F.mse_loss(logits.float().squeeze(-1), gold.float(), reduction="sum")
            else:
                total = total + F.cross_entropy(logits.float(), gold.long(), reduction="sum")
        return total, len(labels)

    # ---- persistence: heads.safetensors beside the encoder's model.safetensors ----

    def save_heads(self, directory: Path) -> None:
        """Write `heads.safetensors` (keys `<task>.<param>`) and `heads.json` (the HeadSpecs)."""
        import json
        import os

        directory = Path(directory)
        tensors = {f"{k}": v.detach().contiguous().cpu() for k, v in self.heads.state_dict().items()}
        tmp = directory / "heads.safetensors.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, directory / "heads.safetensors")
        tmp = directory / "heads.json.tmp"
        tmp.write_text(json.dumps([asdict(s) for s in self.specs], indent=1))
        os.replace(tmp, directory / "heads.json")

    def load_heads(self, directory: Path, mapping: dict[str, str] | None = None) -> list[str]:
        """Copy saved heads into this model's; returns the tasks whose head was loaded.

        `mapping` {own task: saved task} (default: each task from its own name) lets STILTs start
        the target's head from the support's where both have the same label space. A head missing
        from the file, or of another shape, is left as initialised."""
        saved = load_file(str(Path(directory) / "heads.safetensors"))
        own = self.heads.state_dict()
        mapping = mapping if mapping is not None else {s.task: s.task for s in self.specs}
        loaded = []
        for task, source in mapping.items():
            keys = [k for k in own if k.startswith(task + ".")]
            sources = [source + k[len(task):] for k in keys]
            if keys and all(src in saved and saved[src].shape == own[k].shape for k, src in zip(keys, sources)):
                with torch.no_grad():
                    for k, src in zip(keys, sources):
                        own[k].copy_(saved[src])
                loaded.append(task)
        return loaded
