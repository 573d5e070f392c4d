"""Export one task of a tl model folder (a run's best/) as a Hugging Face `*ForSequenceClassification`.

    python tools/train.py --mode single --tasks rte --seeds 42 --export-hf rte-hf   # as tools/train.py
    python tools/export_hf.py results/single__rte__s42/best rte-hf [--task RTE]     # any model folder

Then, in Python with transformers installed (tl itself never imports it):
`transformers.AutoModelForSequenceClassification.from_pretrained("rte-hf")`: encoder and trained head.

tl saves a model as the encoder in the Hugging Face base-model layout (`model.safetensors`,
`config.json`) beside its task heads (`heads.safetensors`, `heads.json`: tl/heads.py), so one encoder
can carry several heads; a single-task run's best/ is written as a classification model already
(tl/train.py `save_best`), and this tool exports any task of any model folder. transformers'
classification models hold one head under fixed names; each tl head is built as theirs is, so the
export is a renaming (`MultiTaskModel.hf_classifier`, `HF_CLASSIFIERS` in tl/heads.py): the encoder's
tensors under the family's prefix (`bert.`, `roberta.`, `distilbert.`), the task's head under the
class's names, and `config.json` with `architectures`, `id2label`/`label2id` (the task's label strings;
`num_labels` follows from them), `problem_type` and the head's dropout. RoBERTa's and DistilBERT's
classifiers read the first token, not a pooler, so a pooler is left out there as transformers' class
has none. Tokenizer files are copied. tests/test_export.py checks transformers' outputs against tl's.
Imports tl.heads, tl.model, tl.runs, tl.tasks.
"""
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/flags.py

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from flags import ArgumentParser  # noqa: E402
from tl.heads import MultiTaskModel, read_head_config  # noqa: E402
from tl.model import Encoder  # noqa: E402
from tl.runs import fresh_dir, swap_dir, write_json  # noqa: E402
from tl.tasks import get_task  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt")


def classification_checkpoint(folder, task: str = "") -> tuple[dict, dict]:
    """(config.json dict, tensors) of `task`'s classifier in `folder` (a tl model folder; default task:
    its only head). ValueError, one line, for a folder without heads or a task it has no head for."""
    folder = Path(folder)
    if not (folder / "heads.json").is_file():
        raise ValueError(f"{folder}: no heads.json; expected a tl model folder (a run's best/)")
    specs, share = read_head_config(folder)
    names = [s.task for s in specs]
    if not task and len(specs) > 1:
        raise ValueError(f"{folder} holds the heads of {', '.join(names)}: say which task to export")
    spec = specs[0] if not task else next((s for s in specs if s.task == get_task(task).name), None)
    if spec is None:
        raise ValueError(f"{folder} has no head for {task}; it holds {', '.join(names)}")
    model = MultiTaskModel(Encoder.from_pretrained(folder), specs, share)
    model.load_heads(folder)
    return model.hf_classifier(specs.index(spec), _labels(spec))


def _labels(spec) -> list:
    """The task's label strings when tl knows the task (GLUE, or registered), else LABEL_0, LABEL_1, ..."""
    try:
        labels = get_task(spec.task).labels
    except (KeyError, ValueError):
        labels = None
    return labels if labels and len(labels) == spec.num_labels else [f"LABEL_{i}" for i in range(spec.num_labels)]


def export(folder, out, task: str = "") -> Path:
    """Write `task`'s classifier of tl model folder `folder` to the folder `out` (an earlier export there
    is replaced whole, atomically; any other non-empty folder is refused)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "model.safetensors").is_file():
        raise ValueError(f"{out} exists and is not an exported model: choose a new folder (nothing was written)")
    config, tensors = classification_checkpoint(folder, task)
    tmp = fresh_dir(out.with_name(out.name + ".tmp"))
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    write_json(tmp / "config.json", config)
    for name in TOKENIZER_FILES:
        if (Path(folder) / name).is_file():
            shutil.copy2(Path(folder) / name, tmp / name)
    swap_dir(tmp, out)
    return out


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a tl model folder: a run's best/ (model.safetensors, heads.json, ...)")
    parser.add_argument("out", help="the folder to write (replaced if it exists)")
    parser.add_argument("--task", default="", help="whose head to export (default: the folder's only head)")
    args = parser.parse_args(argv)
    try:
        with torch.no_grad():
            path = export(args.folder, args.out, args.task)
    except (ValueError, OSError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    print(f"wrote {path}: AutoModelForSequenceClassification.from_pretrained({str(path)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
