"""The recipe rules that decide what a run trains on and starts from, on hand-made inputs: which
support run STILTs continues from (max, median, mean-closest), whether its head is carried, the
support size (`--support-size N | Kx`) and the rows a run really gets, the sampler "auto" resolves to,
and the STILTs target's model at step 0 equal, tensor by tensor, to the chosen support's best/."""
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tl.heads import HeadSpec, MultiTaskModel
from tl.model import Encoder, EncoderConfig
from tl.recipes import (RunConfig, carries_head, parse_support_size, plan, resolve_sampler, select_support,
                        train_sizes)
from tl.study.jobs import Context, job_config, run, start_model
from tl.runs import check_existing, write_json
from tl.tokenizer import Tokenizer
from tl.train import TrainSettings, save_model

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
SIZES = {"RTE": 2490, "MNLI": 392702, "QNLI": 104743, "MRPC": 3668, "WNLI": 635}


def records(*scores) -> list[dict]:
    return [{"run_id": f"run{i}", "score": s} for i, s in enumerate(scores)]


# ---------------------------------------------------------------------------------------------
# which support run STILTs continues from


def test_support_selection_by_hand():
    """Scores 70, 72, 75, 71, 90: max 90 (run4); sorted 70 71 72 75 90, median 72 (run1); mean
    75.6, closest 75 (run2): three different runs, so no rule can stand in for another."""
    five = records(70, 72, 75, 71, 90)
    assert select_support(five, "max")["run_id"] == "run4"
    assert select_support(five, "median")["run_id"] == "run1"
    assert select_support(five, "mean-closest")["run_id"] == "run2"
    # an even count: the lower of the two middle runs (sorted 60 65 80 95: 65); mean 75, closest 80
    four = records(95, 65, 80, 60)
    assert select_support(four, "median")["run_id"] == "run1"
    assert select_support(four, "mean-closest")["run_id"] == "run2"
    assert select_support(four, "max")["run_id"] == "run0"
    # ties: the earliest run in the records' order (a stable sort; argmin / argmax take the first)
    assert select_support(records(72, 70, 72), "median")["run_id"] == "run0"
    assert select_support(records(70, 74, 74), "max")["run_id"] == "run1"
    assert select_support(records(70, 74, 70, 74), "mean-closest")["run_id"] == "run0"  # mean 72: all 2 away
    assert select_support(records(55), "median")["run_id"] == "run0"
    # many ties (ten at 70 after ten at 60, then five at 80): the 13th score is the third 70, run2
    assert select_support(records(*[70] * 10, *[60] * 10, *[80] * 5), "median")["run_id"] == "run2"
    with pytest.raises(ValueError, match="^unknown support selection 'best'; choose one of max, median, mean-closest$"):
        select_support(five, "best")


def test_head_carried_by_label_strings_under_tl_and_label_count_under_authors():
    assert carries_head("RTE", "QNLI", "tl") and carries_head("MRPC", "SST-2", "tl")  # same label strings
    assert not carries_head("RTE", "MRPC", "tl") and not carries_head("STS-B", "MRPC", "tl")
    assert carries_head("RTE", "MRPC", "authors") and carries_head("STS-B", "STS-B", "authors")  # 2 = 2 labels
    assert not carries_head("MNLI", "RTE", "authors") and not carries_head("STS-B", "MRPC", "authors")


@pytest.mark.parametrize("changes, builds_on_singles", [
    ({}, True),                                                             # STILTs continues from one
    ({"mode": "mtl", "sampler": "dynamic"}, True),                          # dynamic averages their scores
    ({"mode": "mtl_all", "sampler": "dynamic-softmax"}, True),
    ({"mode": "mtl", "sampler": "dynamic", "reference_scores": "refs.json"}, False),  # reads the file instead
    ({"mode": "mtl", "sampler": "size"}, False),
    ({"mode": "single"}, False)])
def test_the_seeds_a_run_builds_on_are_part_of_its_identity(tmp_path, changes, builds_on_singles):
    """A finished run found under its id with other --support-seeds is a clash (not a result to reuse)
    exactly when the run builds on those single runs."""
    config = {"mode": "stilts", "sampler": "size", "reference_scores": "", "support_seeds": [1, 2, 3], "lr": 2e-5,
              **changes}
    write_json(tmp_path / "record.json", {"run_id": "r", "status": "complete", "config": config})
    assert check_existing(tmp_path, config)["run_id"] == "r"
    other = {**config, "support_seeds": (4, 5, 6)}
    if builds_on_singles:
        with pytest.raises(ValueError, match=r"support_seeds: \[1, 2, 3\] there, \[4, 5, 6\] now"):
            check_existing(tmp_path, other)
    else:
        assert check_existing(tmp_path, other)["run_id"] == "r"
    with pytest.raises(ValueError, match="lr: 2e-05 there, 0.001 now"):  # a setting of every run
        check_existing(tmp_path, {**other, "lr": 1e-3})


def test_the_reference_scores_a_run_read_are_part_of_its_identity(tmp_path):
    """A dynamic run given --reference-scores FILE is the run of the scores in it: the same path holding
    other scores is a clash, the same scores under another path the same run."""
    refs = tmp_path / "refs.json"
    refs.write_text('{"rte": 70, "mnli": 80}')
    cfg = RunConfig(mode="mtl", tasks=("rte", "mnli"), seeds=(1,), reference_scores=str(refs))
    (job,) = plan(cfg, TrainSettings(sampler="dynamic"), SIZES.get)
    config = job_config(job)
    assert config["reference_values"] == {"RTE": 70.0, "MNLI": 80.0}
    write_json(tmp_path / "record.json", {"run_id": job.run_id, "status": "complete", "config": config})
    moved = tmp_path / "moved.json"
    moved.write_text('{"mnli": 80.0, "RTE": 70.0}')
    assert check_existing(tmp_path, job_config(plan(replace(cfg, reference_scores=str(moved)),
                                                     TrainSettings(sampler="dynamic"), SIZES.get)[0]))
    refs.write_text('{"rte": 70, "mnli": 85}')
    with pytest.raises(ValueError, match="reference_values: .*'MNLI': 80.0.* there, .*'MNLI': 85.0.* now"):
        check_existing(tmp_path, job_config(job))


# ---------------------------------------------------------------------------------------------
# support sizes and the rows a run gets


@pytest.mark.parametrize("text, expected", [
    ("", ("", 0)), ("  ", ("", 0)), ("5000", ("n", 5000)), ("1", ("n", 1)), ("2x", ("x", 2.0)),
    (" 0.5x ", ("x", 0.5)), ("1/3x", ("x", 1 / 3)), ("3/2x", ("x", 1.5)),
])
def test_parse_support_size(text, expected):
    kind, value = parse_support_size(text)
    assert kind == expected[0] and value == pytest.approx(expected[1], abs=1e-15)
    assert kind != "n" or isinstance(value, int)


@pytest.mark.parametrize("text", ["0", "-5", "2.5", "x", "0x", "-1x", "1/0x", "lots", "2xx", "1/2"])
def test_bad_support_size_is_one_clear_error(text):
    with pytest.raises(ValueError, match=r"--support-size must be a count \(5000\) or a multiple") as error:
        parse_support_size(text)
    assert repr(text.strip()) in str(error.value) and len(str(error.value).splitlines()) == 1


def sized(**flags) -> RunConfig:
    """A run's size flags (train_sizes reads no other field)."""
    return RunConfig(mode="mtl", tasks=("rte", "mnli"), **flags)


def test_train_sizes_by_hand():
    sizes = SIZES.get
    assert train_sizes(sized(), sizes, "RTE", ["MNLI"]) == {"RTE": 2490, "MNLI": 392702}
    # K times the target's size, rounded (2/3 x 2490 = 1660 exactly; 2/3 x 100 = 66.7 -> 67)
    assert train_sizes(sized(support_size="2/3x"), sizes, "RTE", ["MNLI"]) == {"RTE": 2490, "MNLI": 1660}
    assert train_sizes(sized(target_size=100, support_size="2/3x"), sizes, "RTE", ["MNLI", "QNLI"]) == \
        {"RTE": 100, "MNLI": 67, "QNLI": 67}
    # never more than the support has, never fewer than one row
    assert train_sizes(sized(support_size="2x"), sizes, "RTE", ["WNLI"]) == {"RTE": 2490, "WNLI": 635}
    assert train_sizes(sized(target_size=3, support_size="0.1x"), sizes, "RTE", ["MNLI"]) == {"RTE": 3, "MNLI": 1}
    # a count; --target-size above the set's size keeps the set; --limit-train caps every task first
    assert train_sizes(sized(support_size="1000"), sizes, "RTE", ["MNLI", "WNLI"]) == \
        {"RTE": 2490, "MNLI": 1000, "WNLI": 635}
    assert train_sizes(sized(target_size=5000), sizes, "RTE", []) == {"RTE": 2490}
    assert train_sizes(sized(limit_train=500, support_size="2x"), sizes, "RTE", ["MNLI", "WNLI"]) == \
        {"RTE": 500, "MNLI": 500, "WNLI": 500}
    assert train_sizes(sized(limit_train=500, target_size=100, support_size="3x"), sizes, "RTE", ["MNLI"]) == \
        {"RTE": 100, "MNLI": 300}


def test_sampler_auto_and_fixed_values():
    for protocol in ("tl", "authors"):
        for sampler in ("auto", "uniform", "dynamic"):
            assert resolve_sampler("single", sampler, protocol) == resolve_sampler("stilts", sampler, protocol) == "size"
    assert resolve_sampler("mtl", "auto", "tl") == resolve_sampler("mtl_all", "auto", "tl") == "dynamic"
    assert resolve_sampler("mtl", "auto", "authors") == "uniform"  # bin/glue/execute_glue's pairs
    assert resolve_sampler("mtl_all", "auto", "authors") == "size"  # Table 1's MTL-ALL
    assert resolve_sampler("mtl", "dynamic", "authors") == resolve_sampler("mtl_all", "dynamic", "authors") == \
        "dynamic-softmax"
    assert resolve_sampler("mtl", "dynamic", "tl") == "dynamic"
    for sampler in ("uniform", "size", "temperature", "dynamic-softmax"):
        assert resolve_sampler("mtl", sampler, "tl") == resolve_sampler("mtl", sampler, "authors") == sampler


def tiny_config(**kw) -> EncoderConfig:
    base = dict(model_type="bert", vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=32, hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)
    base.update(kw)
    return EncoderConfig(**base)


@pytest.fixture
def tiny_model(tmp_path, minilm_path) -> Path:
    """A small random BERT (seed 0) with MiniLM's real tokenizer: the base model of the runs below."""
    torch.manual_seed(0)
    folder = tmp_path / "tiny-bert"
    Encoder(tiny_config()).save_pretrained(folder)
    Tokenizer.from_checkpoint(minilm_path).save(folder)
    return folder


def test_support_size_kx_run_trains_on_k_times_the_target_rows(tmp_path, tiny_model):
    """An MTL run with --target-size 12 --support-size 2x: its record counts 12 RTE and 24 MRPC rows
    (of the samples' 256 each), and one tl epoch (one pass over the target, rows in the size sampler's
    12:24 proportion) consumes each of them exactly once."""
    cfg = RunConfig(mode="mtl", tasks=("rte", "mrpc"), seeds=(1,), model=str(tiny_model), data_dir=str(SAMPLES),
                    results_dir=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"), target_size=12,
                    support_size="2x", device="cpu")
    settings = TrainSettings(epochs=1, batch_size=12, lr=1e-4, evals_per_epoch=1, eval_batch_size=128,
                             progress=False, sampler="size")
    (record,) = run(cfg, settings)
    assert record["run_id"] == "mtl__rte+mrpc__size__tgt12__sup2x__s1" and record["status"] == "complete"
    assert record["train_sizes"] == {"RTE": 12, "MRPC": 24}
    assert record["examples_seen"] == {"RTE": 12, "MRPC": 24} and record["steps"] == 3
    assert record["passes"] == pytest.approx({"RTE": 1.0, "MRPC": 1.0})


# ---------------------------------------------------------------------------------------------
# STILTs starts from the chosen support's best/, not from the base model


def support_model(seed: int, task: str) -> MultiTaskModel:
    torch.manual_seed(seed)
    return MultiTaskModel(Encoder(tiny_config()), [HeadSpec(task, 2)])


@pytest.mark.parametrize("selection, chosen_seed", [("max", 2), ("median", 3)])
def test_stilts_starts_from_the_chosen_supports_best(tmp_path, tiny_model, selection, chosen_seed):
    """Three complete QNLI support runs (scores 60, 80, 75; their best/ written as fit writes it, each
    a different random model): the RTE target's encoder at step 0 equals the chosen run's encoder
    tensor by tensor (max: seed 2; median: seed 3), differs from the other runs' and from the base
    model's, and its head is the support's trained one (RTE and QNLI share their label strings)."""
    cfg = RunConfig(mode="stilts", tasks=("rte", "qnli"), seeds=(1,), support_seeds=(1, 2, 3), model=str(tiny_model),
                    data_dir=str(SAMPLES), results_dir=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"),
                    support_selection=selection, device="cpu")
    ctx = Context(cfg)
    *supports, job = plan(cfg, TrainSettings(), SIZES.get)
    assert [s.run_id for s in supports] == list(job.needs) == ["single__qnli__s1", "single__qnli__s2", "single__qnli__s3"]
    models = {}
    for s, score in zip(supports, (60.0, 80.0, 75.0)):
        models[s.seed] = support_model(10 + s.seed, "QNLI")
        save_model(models[s.seed], ctx.results / s.run_id / "best", {"task": "QNLI", "step": 1})
        write_json(ctx.results / s.run_id / "record.json", {"run_id": s.run_id, "status": "complete", "score": score})

    model, extra = start_model(ctx, job, ["RTE"])
    assert extra["support_run"] == f"single__qnli__s{chosen_seed}" and extra["support_selection"] == selection
    assert extra["support_score"] == {2: 80.0, 3: 75.0}[chosen_seed] and extra["head"] == "reused"
    assert extra["support_runs"] == list(job.needs)
    state = model.encoder.state_dict()
    chosen = models[chosen_seed].encoder.state_dict()
    assert state.keys() == chosen.keys()
    for key, tensor in chosen.items():
        assert torch.equal(state[key], tensor), key
    base = Encoder.from_pretrained(tiny_model).state_dict()
    for other in [base] + [models[s].encoder.state_dict() for s in models if s != chosen_seed]:
        assert not torch.equal(state["embeddings.word_embeddings.weight"], other["embeddings.word_embeddings.weight"])
    head, support_head = model.heads["RTE"].state_dict(), models[chosen_seed].heads["QNLI"].state_dict()
    assert head.keys() == support_head.keys() and all(torch.equal(head[k], support_head[k]) for k in head)
