"""Every command of the README and of each tool's --help text runs as written (issue 16).

A command is a line of an indented block starting with `python tools/`, `bash tools/` or `torchrun`
(README.md, and each tool's docstring: its --help). Words after `#` are a comment; `$$` is this
process's id and `~` a fresh HOME, as a shell gives them. The rule, per command:
- it runs verbatim, in-process, in a fresh folder holding what a reader would have there:
  data/glue/ (the bundled samples: a download finds its tasks present and fetches nothing), results/
  with complete run records and a trained best/, scores.csv, bench.json; TL_CACHE's hub cache holds a
  small random `distilroberta-base`, so nothing is downloaded. So tools/stats.py, tools/export_hf.py,
  tools/download_glue.py, tools/grid.py's dry runs and --emit-slurm, and every --help run as written;
  a number of runs in the comment ("780 runs") must be the dry run's total.
- a command that would train gets `--dry-run` appended where the tool has it (tools/grid.py).
  tools/train.py has none: its own `parse` reads and checks the flags, and `tl.recipes.plan` lists
  the runs it would train (the real quickstart is CI's `bash tools/setup.sh quickstart`).
- torchrun: its own options are torchrun's; `...` (more flags of yours) is dropped; the tools/train.py
  part is parsed and planned as above.
- `bash tools/setup.sh ...`: CI's two commands, checked by tests/test_setup.py; not rerun here.
- benchmarks (`tools/bench.py NAME`, minutes each): the named benchmark's --help.
- usage synopses, with optional parts in `[...]`, are not commands.
"""
import ast
import contextlib
import json
import os
import re
import shlex
from pathlib import Path

import pytest
import torch

from tl.heads import HeadSpec, MultiTaskModel
from tl.model import Encoder, EncoderConfig
from tl.recipes import PAPER_SEEDS, plan
from tl.tasks import get_task
from tl.tokenizer import Tokenizer
from helpers import load_tool

ROOT = Path(__file__).resolve().parents[1]
PREFIXES = ("python tools/", "bash tools/", "torchrun ")


def commands(text: str) -> list:
    return [line.strip() for line in text.splitlines()
            if line.startswith("    ") and line.strip().startswith(PREFIXES) and "[" not in line]


def tool_commands() -> list:
    out = []
    for path in sorted((ROOT / "tools").glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        out += [(f"tools/{path.name}", c) for c in commands("\n".join("    " + x for x in doc.splitlines()))]
    return out


README = [("README.md", c) for c in commands((ROOT / "README.md").read_text())]
ALL = list({c.split("#")[0].strip(): (where, c) for where, c in README + tool_commands()}.values())  # each once


@pytest.fixture(scope="module")
def tools():
    return {name: load_tool(name) for name in ("train", "grid", "stats", "download_glue", "export_hf", "bench")}


def record(run_id, mode, target, supports, seed, score, protocol="tl") -> dict:
    return {"run_id": run_id, "status": "complete", "mode": mode, "target": target, "supports": supports,
            "seed": seed, "score": score, "protocol": protocol, "sampler": "size" if mode == "mtl" else None,
            "passes": {target: 2.0}, "train_sizes": {"RTE": 2490, "MRPC": 3668}}


@pytest.fixture(scope="module")
def files(tmp_path_factory, minilm_path) -> Path:
    """What a reader's working folder holds, made once: results/ (tl records and a best/), authors/
    (the same runs under the authors' protocol), scores.csv, bench.json, and a hub cache with a small
    random distilroberta-base."""
    root = tmp_path_factory.mktemp("reader")
    torch.manual_seed(0)
    cached = root / "cache" / "models" / "distilroberta-base"  # as downloaded: real positions (514)
    Encoder(EncoderConfig(model_type="roberta", vocab_size=30522, hidden_size=16, num_hidden_layers=1,
                          num_attention_heads=2, intermediate_size=32, hidden_act="gelu", hidden_dropout_prob=0.1,
                          attention_probs_dropout_prob=0.1, max_position_embeddings=514, type_vocab_size=1,
                          layer_norm_eps=1e-5, pad_token_id=1)).save_pretrained(cached)
    Tokenizer.from_checkpoint(minilm_path).save(cached)
    rows = ["target,support,method,seed,score"]
    for seed, shift in ((1, 0.0), (2, 1.5)):
        for mode, supports, score in (("single", [], 60.0), ("stilts", ["MRPC"], 63.0), ("mtl", ["MRPC"], 61.0)):
            rid = f"{mode}__rte{'+mrpc' if supports else ''}__s{seed}"
            for protocol, folder in (("tl", "results"), ("authors", "authors")):
                (root / folder / rid).mkdir(parents=True)
                (root / folder / rid / "record.json").write_text(json.dumps(
                    record(rid, mode, "RTE", supports, seed, score + shift, protocol)))
            rows.append(f"RTE,{','.join(supports)},{mode},{seed},{score + shift}")
    (root / "scores.csv").write_text("\n".join(rows) + "\n")
    best = root / "results" / "single__rte__s42" / "best"  # tools/export_hf.py's example folder
    encoder = Encoder.from_pretrained(cached)
    encoder.save_pretrained(best)
    MultiTaskModel(encoder, [HeadSpec("RTE", 2)]).save_heads(best)
    tasks = {t: {"tl": {"examples_per_second": 10.0, "useful_tokens_per_second": 500.0, "useful_token_mfu": 0.5}}
             for t in ("CoLA", "SST-2", "MRPC", "QQP", "STS-B", "MNLI", "QNLI", "RTE", "WNLI")}
    (root / "bench.json").write_text(json.dumps({"model": "m", "device": "d", "tasks": tasks}))
    return root


@pytest.fixture
def reader(tmp_path, monkeypatch, files):
    """A fresh working folder: data/glue/ (the bundled samples), results/, scores.csv, bench.json (links
    to `files`, read only); HOME (with an empty ~/Downloads) and TL_CACHE set."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TL_CACHE", str(files / "cache"))
    (tmp_path / "home" / "Downloads").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "glue").symlink_to(ROOT / "data" / "samples")
    for name in ("results", "scores.csv", "bench.json"):
        (tmp_path / name).symlink_to(files / name)
    return tmp_path


def words(command: str, tmp_path: Path) -> list:
    argv = shlex.split(command.replace("$$", str(os.getpid())), comments=True)
    return [str(tmp_path / "home") + a[1:] if a.startswith("~/") else a for a in argv if a != "..."]


def planned_runs(train, args: list) -> list:
    """tools/train.py's flags as its parse reads them, and the jobs it would train."""
    cfg, settings = train.parse(args)
    jobs = plan(cfg, settings, lambda t: get_task(t).train_size)
    assert jobs and all(j.seed in cfg.seeds or j.seed in cfg.support_seeds for j in jobs)
    return jobs


@pytest.mark.parametrize("where, command", ALL, ids=[f"{w}:{c[:60]}" for w, c in ALL])
def test_command_runs_as_written(where, command, reader, files, tools, capsys):
    argv = words(command, reader)
    if argv[0] == "bash":
        assert argv[1] == "tools/setup.sh" and argv[2] in ("quickstart", "test")  # tests/test_setup.py
        return
    if argv[0] == "torchrun":
        argv = ["python", *argv[next(i for i, a in enumerate(argv) if a.endswith(".py")):]]
    tool, args = Path(argv[1]).stem, argv[2:]
    if args == ["--help"] or tool == "bench":
        with pytest.raises(SystemExit) as e:
            (tools[tool].main([*args[:1], "--help"]) if tool == "bench" else tools[tool].main(args))
        assert e.value.code == 0 and capsys.readouterr().out.startswith("usage: ")
        return
    if tool == "train":
        planned_runs(tools["train"], args)
        return
    if tool == "grid" and "--emit-slurm" not in args and "--dry-run" not in args:
        args.append("--dry-run")
    if tool == "stats" and "authors" in args:  # the reader's results are of the authors' protocol
        (reader / "results").unlink()
        (reader / "results").symlink_to(files / "authors")
    with contextlib.suppress(SystemExit):
        status = tools[tool].main(args)
    out, err = capsys.readouterr()
    assert status == 0, err
    runs = re.search(r"#.*?\b(\d+) runs", command)
    if runs:
        assert f"total: {runs.group(1)} runs" in out


def test_readme_has_the_commands_it_should():
    """The extraction finds the README's commands (a changed layout would silently test nothing)."""
    found = [c for _, c in README]
    assert len(found) >= 20 and sum(c.startswith("python tools/grid.py") for c in found) >= 5
    assert "python tools/train.py --help" in found and any(c.startswith("torchrun") for c in found)


def test_support_seeds_are_one_rule_by_hand_and_in_a_grid(tools, reader):
    """The README's STILTs and dynamic commands with --seeds 42: tools/train.py and tools/grid.py plan
    the same run with the same support runs, the paper's five (the README: whatever --seeds says)."""
    from tl.study.plan import make_plan

    for args in (["--mode", "stilts", "--tasks", "rte,mnli"], ["--mode", "mtl", "--tasks", "rte,mnli"]):
        by_hand = {j.run_id: j.needs for j in planned_runs(tools["train"], [*args, "--seeds", "42"])}
        asked = next(rid for rid in by_hand if rid.startswith(args[1]))
        supports = {f"single__{t}__s{s}" for t in ("mnli", "rte")[:1 + (args[1] == "mtl")] for s in PAPER_SEEDS}
        assert set(by_hand[asked]) == supports
        grid, base, settings = tools["grid"].parse(["--plan", "paper", "--tasks", "rte,mnli", "--seeds", "42",
                                                    "--methods", args[1]])
        in_grid = {j.run_id: j.needs for j in make_plan(grid, base, settings)}
        assert set(in_grid[asked]) == supports
