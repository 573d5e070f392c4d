"""tl.tasks: the GLUE registry against the paper's protocol, the readers on the real GLUE files
(official row counts, the malformed QQP row), error messages, and user-defined JSON tasks."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tl.metrics import compute_metrics, headline_score
from tl.tasks import (GLUE_TASKS, TaskSpec, get_task, load_task_spec, read_split, read_text, register_task,
                      with_files)

PROTOCOL = Path(__file__).resolve().parents[1] / "docs" / "PROTOCOL.md"
# official dev sizes (the GLUE distribution; the HF glue split sizes)
OFFICIAL_DEV = {"CoLA": 1043, "SST-2": 872, "MRPC": 408, "STS-B": 1500, "QNLI": 5463, "RTE": 277, "WNLI": 71}


def test_registry_follows_the_protocol_table():
    table = PROTOCOL.read_text().split("| task | train size | metric |")[1].split("\n\n")[0]
    rows = re.findall(r"^\| (\S+) \| ([\d,]+) \| (.+?) \|$", table, flags=re.M)
    headline = {"matched accuracy": "accuracy", "(accuracy + F1) / 2": "acc_and_f1", "accuracy": "accuracy",
                "Matthews correlation": "matthews", "Spearman correlation (regression head)": "spearman"}
    assert [r[0] for r in rows] == [t.name for t in GLUE_TASKS]  # the paper's order
    for (_, size, metric), spec in zip(rows, GLUE_TASKS):
        assert spec.train_size == int(size.replace(",", ""))
        assert spec.headline == headline[metric]
    assert get_task("STS-B").is_regression and get_task("sts-b").num_labels == 1
    assert get_task("mnli").num_labels == 3 and get_task("MNLI").eval_splits == ("dev", "dev_mismatched")


def test_names_are_case_insensitive_with_aliases():
    for alias in ("sts-b", "STSB", "stsb", "sts_b"):
        assert get_task(alias).name == "STS-B"
    for alias in ("sst2", "SST-2", "sst-2"):
        assert get_task(alias).name == "SST-2"
    assert get_task("qnli") is get_task("QNLI")
    with pytest.raises(ValueError, match="unknown task 'glue9'; known: MNLI, QQP"):
        get_task("glue9")


@pytest.mark.parametrize("task", ["CoLA", "SST-2", "MRPC", "STS-B", "RTE", "WNLI", "QNLI"])
def test_real_files_load_with_official_row_counts(shared_glue, task):
    spec = get_task(task)
    splits = ["dev"] if task == "QNLI" else ["train", "dev"]  # QNLI train exists only in part
    for split in splits:
        examples = read_split(spec, shared_glue, split)
        assert len(examples) == (spec.train_size if split == "train" else OFFICIAL_DEV[task])
        assert examples.skipped == 0 and len(examples.labels) == len(examples)
        assert (examples.text_b is None) == (spec.text_b is None)
        if spec.is_regression:
            assert examples.labels.dtype == np.float32 and 0 <= examples.labels.min() and examples.labels.max() <= 5
        else:
            assert examples.labels.dtype == np.int64 and set(np.unique(examples.labels)) == set(range(spec.num_labels))


def test_first_rows_and_quoting_off(shared_glue):
    assert read_split(get_task("CoLA"), shared_glue, "train").text_a[0].startswith("Our friends won't buy")
    mrpc = read_split(get_task("MRPC"), shared_glue, "train")  # header with a BOM, columns by name
    assert mrpc.text_a[0].startswith("Amrozi accused his brother") and mrpc.labels[0] == 1
    dev = read_split(get_task("MRPC"), shared_glue, "dev")
    assert dev.text_b[0].startswith('" The foodservice pie business')  # a leading quote is text


def test_qqp_partial_file_reports_its_malformed_row(shared_glue):
    spec = with_files(get_task("QQP"), train="partial/train_subset.tsv")
    with pytest.warns(UserWarning, match=r"train_subset.tsv: skipped 1 of 23497 lines .* lines 2$"):
        examples = read_split(spec, shared_glue, "train")
    assert len(examples) == 23496 and examples.skipped == 1


def test_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python tools/download_glue.py --tasks RTE --data-dir"):
        read_split(get_task("rte"), tmp_path, "train")
    with pytest.raises(ValueError, match="no split 'test'"):
        read_split(get_task("rte"), tmp_path, "test")


def write_rte(folder: Path, n: int, bad: dict) -> None:
    """An RTE-shaped train.tsv with n rows; `bad` maps a row number to the broken line to put there."""
    lines = ["index\tsentence1\tsentence2\tlabel"]
    for i in range(n):
        lines.append(bad.get(i, f"{i}\tA sentence {i}.\tAnother {i}.\t{'entailment' if i % 2 else 'not_entailment'}"))
    (folder / "RTE").mkdir(parents=True, exist_ok=True)
    (folder / "RTE" / "train.tsv").write_text("\n".join(lines) + "\n")


def test_malformed_lines_are_skipped_counted_and_over_one_percent_is_an_error(tmp_path):
    write_rte(tmp_path, 300, {4: "4\tonly three\tfields", 9: "9\ta\tb\tmaybe"})  # wrong count, unknown label
    with pytest.warns(UserWarning, match=r"skipped 2 of 300 lines .* lines 6, 11$"):  # file lines, header = 1
        examples = read_split(get_task("RTE"), tmp_path, "train")
    assert len(examples) == 298 and examples.text_a[4] == "A sentence 5."
    write_rte(tmp_path, 300, {i: f"{i}\tbroken" for i in range(0, 40, 10)})  # 4 of 300 > 1%
    with pytest.raises(ValueError, match=r"skipped 4 of 300 lines .*more than 1% bad"):
        read_split(get_task("RTE"), tmp_path, "train")


def test_user_defined_task_from_json(tmp_path):
    (tmp_path / "train.tsv").write_text("text\tpolarity\nGreat movie\tpos\nAwful\tneg\nFine\tpos\n")
    (tmp_path / "dev.tsv").write_text("text\tpolarity\nLoved it\tpos\nHated it\tneg\n")
    spec_file = tmp_path / "polarity.json"
    spec_file.write_text(json.dumps({"name": "Polarity-Test", "files": {"train": "train.tsv", "dev": "dev.tsv"},
                                     "text_a": "text", "label": 1, "labels": ["neg", "pos"],
                                     "metrics": ["accuracy", "f1"], "headline": "f1"}))
    spec = get_task(str(spec_file))  # a .json name loads and registers the spec
    assert get_task("polarity-test") is spec and spec.num_labels == 2
    dev = read_split(spec, "unused/data/dir", "dev")  # files are relative to the JSON's folder
    assert dev.text_a == ["Loved it", "Hated it"] and dev.labels.tolist() == [1, 0] and dev.text_b is None
    metrics = compute_metrics(spec, np.array([1, 1]), dev.labels)
    assert metrics == {"accuracy": 0.5, "f1": pytest.approx(2 / 3)}
    assert headline_score(spec, metrics) == pytest.approx(200 / 3)


def test_user_defined_regression_task_without_header(tmp_path):
    (tmp_path / "train.tsv").write_text("a b\tc d\t0.5\nx\ty\t4.25\n")
    (tmp_path / "spec.json").write_text(json.dumps({"name": "Sim", "files": {"train": "train.tsv", "dev": "train.tsv"},
                                                    "has_header": False, "text_a": 0, "text_b": 1, "label": -1,
                                                    "regression": True, "label_range": [0, 5], "train_size": 2,
                                                    "aliases": ["sim-alias"]}))
    spec = load_task_spec(tmp_path / "spec.json")
    examples = read_split(spec, tmp_path, "train")
    assert examples.labels.tolist() == [0.5, 4.25] and examples.text_b == ["c d", "y"]
    assert spec.metrics == ("pearson", "spearman") and spec.headline == "pearson"
    assert spec.label_range == (0, 5) and spec.train_size == 2 and spec.aliases == ("sim-alias",)


@pytest.mark.parametrize("change, message", [
    ({"colour": "red"}, r"unknown keys \['colour'\]"),
    ({"regression": True}, "either \"labels\""),
    ({"metrics": ["bleu"]}, r"unknown metric\(s\) \['bleu'\]"),
    ({"has_header": False}, "given by name but has_header is false"),
    ({"labels": ["a", "a"]}, "labels must be distinct"),
    ({"label": ...}, r"missing keys \['label'\]; allowed: \['aliases', 'files', "),
    ({"labels": ...}, r'give either "labels": \[\.\.\.\] \(classification\) or "regression": true'),
    ({"labels": "ab"}, r'"labels" must be a list of label strings, got "ab"$'),
    ({"files": {"train": 5, "dev": "d.tsv"}}, r'"files" must be an object \{split: file name\}, got \{"train": 5'),
    ({"metrics": []}, r'"metrics" is empty; name at least one of \[\'acc_and_f1\', \'accuracy\''),
])
def test_bad_json_specs_name_the_file_and_the_problem(tmp_path, change, message):
    raw = {"name": "Bad", "files": {"train": "t.tsv", "dev": "d.tsv"}, "text_a": "s", "label": "l",
           "labels": ["a", "b"]}
    raw = {k: v for k, v in {**raw, **change}.items() if v is not ...}  # ...: the key left out
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=message) as error:
        load_task_spec(tmp_path / "bad.json")
    assert "bad.json" in str(error.value)


def test_register_refuses_a_clashing_name():
    rte = get_task("RTE")
    clash = TaskSpec(name="rte", dirname="x", files=rte.files, text_a=0, text_b=None, label=1, has_header=False,
                     labels=("0", "1"), metrics=("accuracy",), headline="accuracy")
    with pytest.raises(ValueError, match="clashes with registered task 'RTE'"):
        register_task(clash)


def test_samples_cover_all_nine_tasks_and_read_cleanly(samples_dir):
    for spec in GLUE_TASKS:
        for split in spec.files:
            examples = read_split(spec, samples_dir, split)
            assert len(examples) >= 64 and examples.skipped == 0
            if not spec.is_regression:
                assert len(np.unique(examples.labels)) >= 2


def test_json_spec_files_that_are_not_specs(tmp_path):
    path = tmp_path / "spec.json"
    with pytest.raises(FileNotFoundError, match=f"^task spec {re.escape(str(path))} not found$"):
        load_task_spec(path)
    path.write_text("{")
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: not valid JSON \\(Expecting"):
        load_task_spec(path)
    path.write_text("[1]")
    with pytest.raises(ValueError, match=re.escape(f"{path}: expected a JSON object with keys ['aliases', 'files', ")):
        load_task_spec(path)
    path.write_text(json.dumps({"name": "Fine", "files": {"train": "t", "dev": "d"}, "text_a": 0, "label": 1,
                                "has_header": False, "labels": ["a", "b"]}))
    spec = load_task_spec(path)  # a classification task's default metric
    assert spec.metrics == ("accuracy",) and spec.headline == "accuracy" and spec.train_size is None


TOY = dict(name="Toy", dirname="Toy", files={"train": "t.tsv", "dev": "d.tsv"}, text_a=0, text_b=None, label=1,
           has_header=False, labels=("a", "b"), metrics=("accuracy",), headline="accuracy")
REGRESSION = dict(labels=None, metrics=("pearson",), headline="pearson")
INF = float("inf")


@pytest.mark.parametrize("change, message", [
    ({"name": "my task"}, "task 'my task': 'my task' is not a task or split name (they name folders): use letters, "
                          "digits, '-' and '_', starting with a letter or digit"),
    ({"train_size": 0}, "task 'Toy': train_size must be a positive integer, got 0"),
    ({"train_size": 2.5}, "task 'Toy': train_size must be a positive integer, got 2.5"),
    ({"label_range": (0.0, 1.0)}, "task 'Toy': label_range must be [low, high] with low < high, for a regression task"),
    *[({**REGRESSION, "label_range": r}, "task 'Toy': label_range must be [low, high] with low < high, for a "
       "regression task") for r in [(0.0, 1.0, 2.0), (-INF, 1.0), (1.0, 1.0), (0.0, INF)]],
    ({"files": {"train": "t.tsv"}}, "task 'Toy': files must name a 'train' and a 'dev' file, got ['train']"),
    ({"headline": "f1"}, "task 'Toy': headline 'f1' must be one of its metrics ['accuracy']"),
    ({"labels": ()}, "task 'Toy': labels must be distinct and non-empty, got ()"),
    *[({"labels": None, "metrics": (m,), "headline": m}, "task 'Toy': a regression task (no labels) can only use "
       "pearson/spearman") for m in ("accuracy", "f1", "matthews", "acc_and_f1")],
    ({"text_b": 1.5}, "task 'Toy': a column must be an index or a header name, got 1.5"),
    ({"text_a": None}, "task 'Toy': text_a and label columns are required"),
])
def test_task_spec_refuses_bad_fields_in_one_line(change, message):
    with pytest.raises(ValueError) as error:
        TaskSpec(**{**TOY, **change})
    assert str(error.value) == message


def test_task_spec_edges_that_are_valid():
    assert TaskSpec(**{**TOY, **REGRESSION, "label_range": (0.0, 5.0), "train_size": 1}).label_range == (0.0, 5.0)


def test_undecodable_byte_names_its_line(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_bytes(b"\nline two\n\xff three\nfour\nfive\n")  # byte 10 is not UTF-8; it is on line 3
    with pytest.raises(ValueError) as error:
        read_text(path)
    assert str(error.value) == f"{path}, line 3: not UTF-8 (invalid start byte at byte 10); save it as UTF-8"


def toy(tmp_path, text: str, **change) -> TaskSpec:
    """A Toy task (labels a/b) whose train and dev file is tmp_path/t.tsv, holding `text`."""
    (tmp_path / "t.tsv").write_text(text, newline="")
    return TaskSpec(**{**TOY, "files": {"train": str(tmp_path / "t.tsv"), "dev": str(tmp_path / "t.tsv")}, **change})


def test_columns_by_name_and_by_index_with_their_errors(tmp_path):
    path = tmp_path / "t.tsv"
    spec = toy(tmp_path, "text\tlabel\nx\ta\n", has_header=True, text_a="sentence", label="label")
    with pytest.raises(ValueError, match=re.escape(f"{path}: column 'sentence' not in the header ['text', 'label']")):
        read_split(spec, tmp_path, "train")
    with pytest.raises(ValueError, match=re.escape(f"{path}: column index 2 out of range for 2 fields per line")):
        read_split(toy(tmp_path, "x\ta\n", label=2), tmp_path, "train")
    assert read_split(toy(tmp_path, "x\ta\n", text_a=-2), tmp_path, "train").text_a == ["x"]  # -2 of 2 fields: 0


def test_line_endings_and_trailing_text_are_kept_as_written(tmp_path):
    """CRLF lines lose their "\\r" only: a last field's own trailing space or "X" is text."""
    spec = toy(tmp_path, "b\tA\tMalcolm X\r\na\tB\ttrailing space \r\n", text_a=1, text_b=2, label=0)
    examples = read_split(spec, tmp_path, "train")
    assert examples.text_b == ["Malcolm X", "trailing space "] and examples.labels.tolist() == [1, 0]
    assert examples.path == tmp_path / "t.tsv"


def test_files_that_cannot_be_read_as_the_spec_says(tmp_path):
    (tmp_path / "RTE" / "train.tsv").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="a folder is there, not a file: move it away and put the "
                                                "tab-separated file in its place$"):
        read_split(get_task("RTE"), tmp_path, "train")
    spec = toy(tmp_path, "")
    (tmp_path / "t.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f'Toy train file not found: {tmp_path / "t.tsv"}; put the '
                                                          'file there or fix "files" in the task spec of Toy')):
        read_split(spec, tmp_path, "train")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 't.tsv'}: no data lines")):
        read_split(toy(tmp_path, "text\tlabel\n", has_header=True), tmp_path, "train")
    # the header is the layout: rows with another field count are malformed, however many they are
    with pytest.raises(ValueError, match="skipped 2 of 2 lines"):
        read_split(toy(tmp_path, "text\tlabel\nx\ta\tmore\ny\tb\tmore\n", has_header=True), tmp_path, "train")


def test_headerless_layout_is_the_most_common_and_one_percent_bad_is_a_warning(tmp_path):
    """First line malformed (1 of 100 = 1%, not more): a warning, and the other 99 lines read."""
    text = "only one field\n" + "".join(f"row {i}\t{'ab'[i % 2]}\n" for i in range(99))
    with pytest.warns(UserWarning, match=r"t.tsv: skipped 1 of 100 lines \(.*\), lines 1$"):
        examples = read_split(toy(tmp_path, text), tmp_path, "train")
    assert len(examples) == 99 and examples.text_a[0] == "row 0" and examples.skipped == 1


def test_skipped_lines_warning_points_at_the_caller(tmp_path):
    """stacklevel: the warning names the line that called read_split, not tl/tasks.py."""
    text = "only one field\n" + "".join(f"row {i}\ta\n" for i in range(99))
    with pytest.warns(UserWarning) as record:
        read_split(toy(tmp_path, text), tmp_path, "train")
    assert [w.filename for w in record] == [__file__]


def test_scores_outside_the_range_or_not_numbers_are_bad_lines(tmp_path):
    no_range = toy(tmp_path, "a\t-7.5\nb\t1e3\n", **REGRESSION)
    assert read_split(no_range, tmp_path, "train").labels.tolist() == [-7.5, 1e3]
    spec = toy(tmp_path, "a\t7\nb\tnan\nc\tinf\nd\t-1\ne\tn/a\nf\t2.5\n", **REGRESSION, label_range=(0.0, 5.0))
    with pytest.raises(ValueError, match=r"skipped 5 of 6 lines \(.*\), lines 1, 2, 3, 4, 5: more than 1% bad"):
        read_split(spec, tmp_path, "train")
    write_rte(tmp_path, 300, {i: f"{i}\tbroken" for i in range(0, 60, 10)})  # six bad lines: five listed
    with pytest.raises(ValueError, match=r"skipped 6 of 300 lines \(.*\), lines 2, 12, 22, 32, 42, \.\.\.: more"):
        read_split(get_task("RTE"), tmp_path, "train")
