"""The bad-input catalogue (docs/RELIABILITY.md): every flag, task file, data file and scores table that
a careless or hostile user could give is refused before any work with exit code 2 and ONE line naming
the flag or the file (and line), and nothing is created in the results folder. All in-process: the tools'
`parse` / `main` with capsys, never a training run. The download cases are in tests/test_download.py."""
import json
import re
from pathlib import Path

import pytest

from tl.model import EncoderConfig
from tl.tasks import get_task, load_task_spec, read_split, with_files
from helpers import load_tool

ROOT = Path(__file__).resolve().parents[1]


train_tool, stats_tool, grid_tool = load_tool("train"), load_tool("stats"), load_tool("grid")


def one_line(capsys, *needles) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A model folder with only config.json (all parse reads): RoBERTa, 66 positions = 64 usable."""
    config = EncoderConfig(model_type="roberta", vocab_size=64, hidden_size=32, num_hidden_layers=1,
                           num_attention_heads=4, intermediate_size=64, hidden_act="gelu", hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0, max_position_embeddings=66, type_vocab_size=1,
                           layer_norm_eps=1e-5, pad_token_id=1)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    return folder


def parse_fails(tmp_path, capsys, args, *needles) -> str:
    """tools/train.py's parse refuses `args` with exit 2 and one line holding `needles`; no results folder."""
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as e:
        train_tool.parse(["--mode", "single", "--tasks", "rte", "--results-dir", str(results), *args])
    assert e.value.code == 2
    assert not results.exists()
    return one_line(capsys, *needles)


# ---------------------------------------------------------------------------------------------------- flags
@pytest.mark.parametrize("args, needle", [
    (["--eval-batch-size", "-1"], "--eval-batch-size must be positive"),
    (["--eval-batch-size", "0"], "--eval-batch-size must be positive"),
    (["--batch-size", "0"], "--batch-size must be positive"),
    (["--max-len", "0"], "--max-len must be at least 8"),
    (["--max-len", "2"], "--max-len must be at least 8"),
    (["--limit-train", "-5"], "--limit-train must be >= 0"),
    (["--target-size", "-1"], "--target-size must be >= 0"),
    (["--max-grad-norm", "0"], "--max-grad-norm must be > 0 (inf: no clipping)"),
    (["--max-grad-norm", "nan"], "--max-grad-norm must be > 0"),
    (["--early-stopping", "-1"], "--early-stopping must be >= 0"),
    (["--warmup-ratio", "2"], "--warmup-ratio must be in [0, 1)"),
    (["--warmup-ratio", "-0.1"], "--warmup-ratio must be in [0, 1)"),
    (["--weight-decay", "-1"], "--weight-decay must be finite and >= 0"),
    (["--weight-decay", "inf"], "--weight-decay must be finite and >= 0"),
    (["--lr", "inf"], "--lr must be in (0, 1]"),
    (["--lr", "1e39"], "--lr must be in (0, 1]"),
    (["--lr", "nan"], "--lr must be in (0, 1]"),
    (["--lr", "0"], "--lr must be in (0, 1]"),
    (["--epochs", "nan"], "--epochs must be finite and >= 0"),
    (["--epochs", "inf"], "--epochs must be finite and >= 0"),
    (["--epochs", "-1", "--max-steps", "5"], "--epochs must be finite and >= 0"),
    (["--epochs", "0"], "set --epochs > 0 or --max-steps > 0"),
    (["--max-steps", "-1"], "--max-steps must be >= 0"),
    (["--temperature", "0"], "--temperature must be finite and > 0"),
    (["--save-every", "-2"], "--save-every must be >= 0"),
    (["--length-pool", "-1"], "--length-pool must be >= 0"),
    (["--max-nonfinite", "0"], "--max-nonfinite must be positive"),
    (["--evals-per-epoch", "0"], "--evals-per-epoch must be positive"),
    (["--seeds", "-1"], "--seeds must be a list of integers in [0, 2^32)"),
    (["--support-seeds", "4294967296"], "--support-seeds must be a list"),
    (["--results-dir", ""], "--results-dir must be a folder"),
    (["--eval-batch-size", "1.5"], "argument --eval-batch-size: invalid int value"),
])
def test_bad_flag_is_one_line_before_any_work(tmp_path, capsys, args, needle):
    parse_fails(tmp_path, capsys, args, needle)


def test_max_len_above_the_models_positions_and_a_missing_model(tmp_path, capsys, model_dir):
    parse_fails(tmp_path, capsys, ["--model", str(model_dir), "--max-len", "65"],
                "--max-len 65 exceeds the 64 positions of --model")
    parse_fails(tmp_path, capsys, ["--model", str(tmp_path / "nowhere")], "nowhere")
    # the limits themselves are accepted: 64 positions, inf (no clipping), a fractional epoch count
    cfg, settings = train_tool.parse(["--mode", "single", "--tasks", "rte", "--model", str(model_dir), "--max-len",
                                      "64", "--max-grad-norm", "inf", "--epochs", "2.5", "--results-dir",
                                      str(tmp_path / "results")])
    assert cfg.max_len == 64 and settings.max_grad_norm == float("inf") and settings.epochs == 2.5
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------------------------------ reference scores
@pytest.mark.parametrize("text, needle", [
    ('{"rte": NaN, "mrpc": 80}', "RTE's score NaN is not a number in [0, 100]"),
    ('{"rte": 1e400, "mrpc": 80}', "RTE's score Infinity is not a number in [0, 100]"),
    ('{"rte": [70], "mrpc": 80}', "RTE's score [70] is not a number"),
    ('{"rte": -1e9, "mrpc": 80}', "is not a number in [0, 100]"),
    ('{"rte": 70, "mrpc": "80"}', "MRPC's score \"80\" is not a number"),
    ('{"rte": 70, "mrpc": true}', "MRPC's score true is not a number"),
    ('{"rte": 70}', "has no score for MRPC"),
    ('[70, 80]', "expected a JSON object"),
    ('{"rte": 70,', "expected a JSON object"),
])
def test_bad_reference_scores(tmp_path, capsys, text, needle):
    refs = tmp_path / "refs.json"
    refs.write_text(text)
    parse_fails(tmp_path, capsys, ["--mode", "mtl", "--tasks", "rte,mrpc", "--sampler", "dynamic",
                                   "--reference-scores", str(refs)], "--reference-scores", str(refs), needle)


def test_grid_checks_reference_scores_and_max_len_before_any_run_folder(tmp_path, capsys, model_dir):
    refs, results = tmp_path / "refs.json", tmp_path / "results"
    refs.write_text('{"rte": NaN, "mrpc": 80}')
    common = ["--plan", "paper", "--tasks", "rte,mrpc", "--methods", "mtl", "--data-dir", str(ROOT / "data" / "samples"),
              "--model", str(model_dir), "--results-dir", str(results), "--no-progress"]
    assert grid_tool.main([*common, "--sampler", "dynamic", "--reference-scores", str(refs)]) == 2
    one_line(capsys, f"--reference-scores {refs}: RTE's score NaN is not a number in [0, 100]")
    assert grid_tool.main([*common, "--max-len", "65"]) == 2
    one_line(capsys, "--max-len 65 exceeds the 64 positions of --model")
    assert not results.exists()


def test_reference_score_range_follows_the_headline_metric(tmp_path):
    """CoLA's Matthews correlation x100 may be negative, accuracy may not."""
    from tl.study.jobs import read_reference_scores

    refs = tmp_path / "refs.json"
    refs.write_text('{"cola": -20.5, "rte": 0}')
    assert read_reference_scores(refs, ["CoLA", "RTE"]) == {"CoLA": -20.5, "RTE": 0.0}
    refs.write_text('{"cola": -100.5, "rte": 0}')
    with pytest.raises(ValueError, match=r"CoLA's score -100.5 is not a number in \[-100, 100\] \(matthews x100\)"):
        read_reference_scores(refs, ["CoLA", "RTE"])


# ------------------------------------------------------------------------------------------------ task files
SPEC = {"files": {"train": "train.tsv", "dev": "dev.tsv"}, "text_a": "s", "label": "l", "labels": ["a", "b"]}


@pytest.mark.parametrize("change, needle", [
    ({"name": "../../../../escape"}, "'../../../../escape' is not a task or split name"),
    ({"name": "a/b"}, "'a/b' is not a task or split name"),
    ({"name": "x.y"}, "'x.y' is not a task or split name"),
    ({"name": ""}, "'' is not a task or split name"),
    ({"name": ".."}, "'..' is not a task or split name"),
    ({"name": "-x"}, "'-x' is not a task or split name"),
    ({"name": 7}, "\"name\" must be a string, got 7"),
    ({"files": {"train": "t.tsv", "dev": "d.tsv", "../up": "u.tsv"}}, "'../up' is not a task or split name"),
    ({"metrics": "accuracy"}, "\"metrics\" must be a list of metric names, got \"accuracy\""),
    ({"train_size": "lots"}, "\"train_size\" must be a positive integer, got \"lots\""),
    ({"train_size": 0}, "train_size must be a positive integer, got 0"),
    ({"train_size": True}, "\"train_size\" must be a positive integer, got true"),
    ({"labels": "ab"}, "\"labels\" must be a list of label strings, got \"ab\""),
    ({"files": {"train": 1, "dev": "d.tsv"}}, "\"files\" must be an object {split: file name}"),
    ({"has_header": "no"}, "\"has_header\" must be true or false"),
    ({"labels": None, "regression": True, "label_range": [5, 0]}, "label_range must be [low, high] with low < high"),
])
def test_bad_task_file_is_one_line_naming_the_file(tmp_path, capsys, change, needle):
    spec = {k: v for k, v in {"name": "Bad-Task", **SPEC, **change}.items() if v is not None}
    path = tmp_path / "task.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="task.json") as e:
        load_task_spec(path)
    assert needle in str(e.value) and "\n" not in str(e.value)
    line = parse_fails(tmp_path, capsys, ["--tasks", str(path)], str(path), needle)
    assert "Traceback" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task.json"]  # no folder made anywhere


def test_task_file_that_is_not_utf8_or_missing(tmp_path, capsys):
    path = tmp_path / "task.json"
    path.write_bytes(b'{"name": "A",\n "files": "\xff"}')
    parse_fails(tmp_path, capsys, ["--tasks", str(path)], f"{path}, line 2: not UTF-8")
    parse_fails(tmp_path, capsys, ["--tasks", str(tmp_path / "absent.json")], "absent.json not found")


# ------------------------------------------------------------------------------------------------ data files
def write_stsb(folder: Path, scores: list) -> Path:
    lines = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
    lines += [f"{i}\tg\tf\ty\t{i}\ts1\ts2\tA {i}.\tB {i}.\t{s}" for i, s in enumerate(scores)]
    (folder / "STS-B").mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        (folder / "STS-B" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_stsb_score_outside_0_to_5_is_a_bad_line(tmp_path):
    spec = get_task("STS-B")
    scores = [round(5 * i / 199, 3) for i in range(200)]
    with pytest.warns(UserWarning, match=r"skipped 1 of 201 lines .* lines 12$"):
        examples = read_split(spec, write_stsb(tmp_path, scores[:10] + [500] + scores[10:]), "train")
    assert len(examples) == 200 and examples.labels.min() == 0 and examples.labels.max() == 5
    with pytest.raises(ValueError, match=r"skipped 3 of 200 lines .*lines 2, 3, 4: more than 1% bad"):
        read_split(spec, write_stsb(tmp_path, [-0.5, 5.01, "nan"] + scores[3:]), "train")


def test_non_utf8_data_file_names_file_and_line(tmp_path):
    (tmp_path / "RTE").mkdir()
    path = tmp_path / "RTE" / "train.tsv"
    path.write_bytes(b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tcaf\xe9\tb\tentailment\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}, line 3: not UTF-8 \(invalid continuation byte") as e:
        read_split(get_task("RTE"), tmp_path, "train")
    assert "\n" not in str(e.value)


def test_a_folder_where_the_data_file_should_be(tmp_path):
    (tmp_path / "RTE" / "train.tsv").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="train.tsv; a folder is there, not a file"):
        read_split(get_task("RTE"), tmp_path, "train")
    user = with_files(get_task("RTE"), dev=str(tmp_path / "RTE"))  # an absolute path that is a folder
    with pytest.raises(FileNotFoundError, match="a folder is there"):
        read_split(user, tmp_path, "dev")


# ------------------------------------------------------------------------------------------- scores tables
def scores_csv(path: Path, rows: list) -> Path:
    """rows of (target, support, method, seed, score) -> a scores table."""
    path.write_text("target,support,method,seed,score\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def table(scale: float = 1.0, **override) -> list:
    """RTE and MRPC, MTL vs STILTs over 3 seeds, x100 times `scale`; override[(target, method, seed)] = score."""
    rows = []
    for target, support, base in (("RTE", "MRPC", 70), ("MRPC", "RTE", 80)):
        for method, shift in (("mtl", 1), ("stilts", -1)):
            for seed in (1, 2, 3):
                score = override.get(f"{target}_{method}_{seed}", (base + shift + seed / 4) * scale)
                rows.append((target, support, method, seed, score))
    return rows


def stats_fails(tmp_path, capsys, path: Path, *needles, extra=()):
    """tools/stats.py refuses the scores table `path` with exit 2 and one line holding `needles`; no --out."""
    out = tmp_path / "out"
    assert stats_tool.main(["--scores", str(path), "--out", str(out), "--no-plots", *extra]) == 2
    assert not out.exists()
    return one_line(capsys, *needles)


def stats_runs(path: Path, out: Path, *extra) -> None:
    assert stats_tool.main(["--scores", str(path), "--out", str(out), "--no-plots", "--n-boot", "20",
                            "--aso-boot", "20", *extra]) == 0


def test_fractions_are_refused_and_scale_100_multiplies(tmp_path, capsys):
    path = scores_csv(tmp_path / "s.csv", table(scale=0.01))
    stats_fails(tmp_path, capsys, path, "the scores of RTE, MRPC", f"{path}:2", "pass --scale 100")
    stats_runs(path, tmp_path / "scaled", "--scale", "100")
    out = capsys.readouterr().out
    assert f"from scores table {path} (scores x100)" in out
    assert "| 71.50 |" in out  # RTE's MTL mean, (71.25 + 71.5 + 71.75) / 3, after x100


def test_one_target_in_fractions_and_one_fraction_among_x100_scores(tmp_path, capsys):
    rows = [r if r[0] == "RTE" else (*r[:4], r[4] / 100) for r in table()]
    stats_fails(tmp_path, capsys, scores_csv(tmp_path / "a.csv", rows), "the scores of MRPC", "write them x100")
    path = scores_csv(tmp_path / "b.csv", table(RTE_stilts_2=0.695))
    stats_fails(tmp_path, capsys, path, f"{path}:6: score 0.695 looks like a fraction among RTE's x100 scores")
    # a degenerate run's exact 0 is no fraction; --scale 1 takes a table as given
    stats_runs(scores_csv(tmp_path / "c.csv", table(RTE_stilts_2=0)), tmp_path / "o1")
    stats_runs(path, tmp_path / "o2", "--scale", "1")


def test_a_correlation_near_zero_is_no_fraction(tmp_path, capsys):
    """STS-B's Pearson/Spearman (and CoLA's Matthews) x100 can be near 0 for a run that did not learn."""
    rows = [("STS-B" if r[0] == "RTE" else r[0], "STS-B" if r[1] == "RTE" else r[1], *r[2:])
            for r in table(RTE_stilts_2=0.0577)]
    stats_runs(scores_csv(tmp_path / "c.csv", rows), tmp_path / "o")
    assert "STS-B" in capsys.readouterr().out


@pytest.mark.parametrize("score, needle", [
    ("1e308", "score 1e+308 is outside [-100, 100]"),
    ("-1e308", "score -1e+308 is outside [-100, 100]"),
    ("100.5", "score 100.5 is outside [-100, 100]"),
    ("nan", "score 'nan' is not a finite number"),
    ("inf", "score 'inf' is not a finite number"),
    ("1e400", "score '1e400' is not a finite number"),
])
def test_out_of_range_scores_name_file_and_line(tmp_path, capsys, score, needle):
    path = scores_csv(tmp_path / "s.csv", table(MRPC_mtl_3=score))
    stats_fails(tmp_path, capsys, path, f"{path}:10: {needle}")


def test_scores_table_not_utf8_bad_scale_and_out_a_file(tmp_path, capsys):
    path = tmp_path / "s.csv"
    path.write_bytes(b"target,support,method,seed,score\nRTE,MRPC,mtl,1,70\nRT\xc9,MRPC,mtl,2,71\n")
    stats_fails(tmp_path, capsys, path, f"{path}, line 3: not UTF-8")
    good = scores_csv(tmp_path / "good.csv", table())
    stats_fails(tmp_path, capsys, good, "--scale must be finite and >= 0", extra=["--scale", "-1"])
    (tmp_path / "out").write_text("")
    assert stats_tool.main(["--scores", str(good), "--out", str(tmp_path / "out"), "--no-plots"]) == 2
    one_line(capsys, f"--out {tmp_path / 'out'}: a file is there, not a folder")
    assert (tmp_path / "out").read_text() == ""
