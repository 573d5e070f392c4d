"""The experiment grid: plan counts (docs/GRID.md's formula), dry-run statuses and cost, shards,
Slurm script, locks, two competing grids, an interrupted grid restarted, a tiny end to end grid
followed by tools/stats.py, bad input."""
import json
import os
import re
import socket
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from tl.model import Encoder, EncoderConfig
from tl.recipes import RunConfig
from tl.study.locks import acquire_lock, live_lock, lock_owner, release_lock
from tl.study.plan import GridConfig, make_plan, shard_runs, train_counts
from tl.tasks import get_task
from tl.train import TrainSettings
from helpers import load_tool

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"


grid_tool = load_tool("grid")


def run_grid(capsys, *args) -> tuple[int, str, str]:
    """tools/grid.py in this process (no interpreter start-up): (exit status, stdout, stderr)."""
    try:
        status = grid_tool.main([str(a) for a in args])
    except SystemExit as e:
        status = e.code
    out = capsys.readouterr()
    return status, out.out, out.err


def total_runs(text: str) -> int:
    return int(re.search(r"^total: (\d+) runs", text, re.M).group(1))


# ---------------------------------------------------------------------------------------------
# plans and their counts


@pytest.mark.parametrize("protocol", ["tl", "authors"])
@pytest.mark.parametrize("tasks", [None, "rte,mrpc,stsb,cola,wnli,sst2"])
def test_paper_plan_count_follows_the_documented_formula(capsys, tmp_path, tasks, protocol):
    """docs/GRID.md: singles T*S, STILTs T(T-1)*S (their supports are the singles), pairwise MTL
    T(T-1)*S ordered pairs (tl) or T(T-1)/2*S unordered ones (authors: one run per pair scores both
    targets), MTL-ALL 3 samplers * S joint runs (each writing T records)."""
    T, S = (9 if tasks is None else len(tasks.split(","))), 5
    args = ["--plan", "paper", "--dry-run", "--protocol", protocol, "--data-dir", tmp_path / "none",
            "--results-dir", tmp_path / "results"]
    status, out, err = run_grid(capsys, *args, *(["--tasks", tasks] if tasks else []))
    assert status == 0, err
    pairs = T * (T - 1) if protocol == "tl" else T * (T - 1) // 2
    expected = T * S + T * (T - 1) * S + pairs * S + 3 * S
    assert (T, expected) in {(9, 780), (6, 345)} if protocol == "tl" else {(9, 600), (6, 270)}  # docs/GRID.md
    assert total_runs(out) == expected
    assert len([line for line in out.splitlines() if line.startswith("to do ")]) == expected
    # records: MTL-ALL's joint run and one per task; an authors pair run one per target
    assert f"{T * S + T * (T - 1) * S + T * (T - 1) * S + 3 * S * (T + 1)} records" in out
    assert f"protocol {protocol}" in out and "hours" in out


def test_authors_plan_samplers_and_shared_pair_runs(tmp_path):
    """--protocol authors: pairs uniform, each unordered pair one MTL run (both targets' jobs share
    it); MTL-ALL samplers uniform, size and their softmax dynamic; tl: dynamic pairs, one per order."""
    base = RunConfig(mode="mtl_all", tasks=("rte", "mrpc", "stsb"), seeds=(1,), support_seeds=(1,),
                     data_dir=str(tmp_path / "none"))
    for protocol, pair_sampler, n_mtl in (("tl", "dynamic", 6), ("authors", "uniform", 3)):
        plan = make_plan(GridConfig(), base, TrainSettings(protocol=protocol))
        mtl = [r for r in plan if r.mode == "mtl"]
        assert len(mtl) == n_mtl and {r.settings.sampler for r in mtl} == {pair_sampler}
        assert {r.settings.protocol for r in plan} == {protocol}
        dynamic = "dynamic-softmax" if protocol == "authors" else "dynamic"
        assert sorted(r.settings.sampler for r in plan if r.mode == "mtl_all") == sorted(["uniform", "size", dynamic])
        assert len({r.run_id for r in plan}) == len(plan)


@pytest.mark.parametrize("protocol", ["tl", "authors"])
def test_size_plan_count(capsys, tmp_path, protocol):
    """Figure 2's plan: 2 target sizes x 5 K x {stilts, mtl} x S; the target's singles at both sizes;
    the support's singles at every distinct subsampled size (its STILTs supports) x S; the same
    under both protocols (the target, so the sizes, is fixed)."""
    S, n_qnli, n_mnli = 5, get_task("QNLI").train_size, get_task("MNLI").train_size
    ks = [Fraction(1, 3), Fraction(1, 2), 1, 2, 3]
    targets = [n_qnli, n_qnli // 2]
    support_sizes = {min(n_mnli, round(float(k) * n)) for k in ks for n in targets}
    expected = 2 * len(ks) * 2 * S + 2 * S + len(support_sizes) * S
    status, out, err = run_grid(capsys, "--plan", "size", "--dry-run", "--data-dir", tmp_path / "none",
                                "--results-dir", tmp_path / "results", "--protocol", protocol)
    assert status == 0, err
    assert total_runs(out) == expected
    if protocol == "tl":
        assert f"single__qnli__tgt{n_qnli // 2}__s42" in out and "mtl__qnli+mnli__dynamic__sup1_3x__s42" in out
        assert f"stilts__qnli+mnli__tgt{n_qnli // 2}__sup3x__s42" in out


def test_cost_at_a_given_throughput(capsys, tmp_path):
    """One RTE run of 1 epoch, batch 10: 2490 training examples (official size) + one evaluation
    of the 277 dev examples at 1/3 of the cost, 67 tokens each (PROTOCOL.md's table), at 67 tokens/s."""
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"model": "m", "device": "d", "tasks": {
        "RTE": {"tl": {"examples_per_second": 1.0, "useful_tokens_per_second": 67.0, "useful_token_mfu": 0.5},
                "baseline": {"examples_per_second": 1.0, "useful_tokens_per_second": 1.0, "useful_token_mfu": 0.1}}}}))
    args = ["--plan", "paper", "--tasks", "rte", "--seeds", "1", "--methods", "single", "--dry-run", "--epochs", "1",
            "--batch-size", "10", "--evals-per-epoch", "1", "--data-dir", tmp_path / "none", "--results-dir", tmp_path]
    for throughput in (bench, "67"):
        status, out, err = run_grid(capsys, *args, "--throughput", throughput)
        assert status == 0, err
        hours = (2490 + 277 / 3) * 67 / 67 / 3600
        assert f"{hours:,.1f} hours in all" in out and "2,490 training examples" in out
        assert re.search(rf"^to do\s+single__rte__s1\s+2,490\s+{hours:.2f}\s", out, re.M)
    assert f"{bench} (model m, device d)" in out or "67 useful tokens/s" in out
    assert "tokens per example docs/PROTOCOL.md's table" in out  # a file of the project, not outside it


def test_dry_run_lists_statuses(capsys, tmp_path):
    results = tmp_path / "results"
    args = ["--plan", "paper", "--tasks", "rte,mrpc", "--seeds", "1", "--support-seeds", "1", "--dry-run",
            "--data-dir", SAMPLES, "--results-dir", results]
    base = RunConfig(mode="mtl_all", tasks=("rte", "mrpc"), seeds=(1,), support_seeds=(1,), data_dir=str(SAMPLES),
                     results_dir=str(results))
    plan = make_plan(GridConfig(), base, TrainSettings())
    ids = [r.run_id for r in plan]
    (results / ids[0]).mkdir(parents=True)
    (results / ids[0] / "record.json").write_text(json.dumps({"status": "complete"}))
    (results / ids[1]).mkdir()
    (results / ids[1] / "record.json").write_text(json.dumps({"status": "running"}))
    (results / ids[2] / "checkpoint").mkdir(parents=True)
    (results / ids[2] / "checkpoint" / "state.json").write_text("{}")
    acquire_lock(results / ids[3] / "grid.lock")
    status, out, err = run_grid(capsys, *args)
    assert status == 0, err
    line = {rid: next(x for x in out.splitlines() if re.search(rf"\s{re.escape(rid)}\s", x)) for rid in ids}
    assert line[ids[0]].startswith("complete ") and line[ids[1]].startswith("partial ")
    assert line[ids[2]].startswith("partial ") and line[ids[3]].startswith("to do ")
    assert f"locked by pid {os.getpid()}" in line[ids[3]]
    assert f"total: {len(plan)} runs (1 complete, 2 partial, {len(plan) - 3} to do)" in out


def test_shards_cover_the_plan_exactly_once(tmp_path):
    base = RunConfig(mode="mtl_all", seeds=(1, 2), support_seeds=(1, 2), data_dir=str(tmp_path / "none"))
    plan = make_plan(GridConfig(), base, TrainSettings())
    ids = [r.run_id for r in plan]
    for n in (1, 3, 7):
        parts = [[r.run_id for r in shard_runs(plan, i, n)] for i in range(n)]
        assert sorted(x for p in parts for x in p) == sorted(ids)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    # dependency order: every run after the runs it depends on
    position = {rid: i for i, rid in enumerate(ids)}
    assert all(position[d] < position[r.run_id] for r in plan for d in r.needs)
    stilts = next(r for r in plan if r.mode == "stilts")
    assert stilts.needs == tuple(f"single__{stilts.supports[0].lower().replace('-', '')}__s{s}" for s in (1, 2))


def test_emit_slurm(capsys, tmp_path):
    script = tmp_path / "grid.sbatch"
    status, out, err = run_grid(capsys, "--plan", "paper", "--tasks", "rte,mrpc", "--seeds", "1,2",
                                "--support-seeds", "1,2", "--data-dir", tmp_path / "none", "--results-dir", tmp_path / "res",
                                "--workers", "2",
                                "--emit-slurm", script, "--slurm-tasks", "4", "--sbatch", "--gres=gpu:1 --time=2:00:00")
    assert status == 0, err
    text = script.read_text()
    assert "#SBATCH --array=0-3" in text and "#SBATCH --gres=gpu:1" in text and "#SBATCH --time=2:00:00" in text
    command = text.strip().splitlines()[-1]
    tool = ROOT / "tools" / "grid.py"
    assert command.startswith(f"{sys.executable} {tool} --plan paper --tasks rte,mrpc --seeds 1,2")
    assert f"cd {Path.cwd()}" in text  # relative paths in the flags mean what they meant here
    assert command.endswith('--shard "${SLURM_ARRAY_TASK_ID}/4"')
    assert "--emit-slurm" not in command and "--workers" not in command and "--slurm-tasks" not in command
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    # the README's form: one option, which starts with "--", as the value of --sbatch
    status, out, err = run_grid(capsys, "--plan", "paper", "--tasks", "rte,mrpc", "--data-dir", tmp_path / "none",
                                "--results-dir", tmp_path / "res", "--emit-slurm", script, "--sbatch", "--gres=gpu:1")
    assert status == 0, err
    text = script.read_text()
    assert "#SBATCH --gres=gpu:1\n" in text and "--gres" not in text.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------
# locks


def test_lock_is_exclusive_and_stale_locks_are_taken_over(tmp_path):
    lock = tmp_path / "run" / "grid.lock"
    token = acquire_lock(lock)
    assert token and lock_owner(lock)["pid"] == os.getpid()
    assert acquire_lock(lock) is None  # held by a live process (this one)
    release_lock(lock, token)
    assert not lock.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "time": 0, "token": "x"}))
    assert live_lock(lock) is None  # its process is gone: stale
    token = acquire_lock(lock)  # and taken over
    assert token and lock_owner(lock)["token"] == token
    release_lock(lock, "not-mine")
    assert lock.exists()  # only the owner's token releases it
    release_lock(lock, token)
    lock.write_text(json.dumps({"pid": dead.pid, "host": "another-host", "time": 0, "token": "y"}))
    assert acquire_lock(lock) is None and live_lock(lock)  # another host's process cannot be checked: respected
    os.utime(lock, (0, 0))  # ... until its heartbeat stops (tl.study.locks.LOCK_TIMEOUT; before: a grid waited forever)
    assert live_lock(lock) is None
    lock.write_text("")  # a writer killed between creating the lock and filling it in
    assert acquire_lock(lock) is None  # fresh: it may still be being written
    os.utime(lock, (0, 0))
    assert live_lock(lock) is None  # long empty: stale
    token = acquire_lock(lock)
    assert token and lock_owner(lock)["token"] == token


# ---------------------------------------------------------------------------------------------
# running grids on the samples with a tiny model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, minilm_path) -> Path:
    """A small random BERT with MiniLM's real tokenizer (the idea of tests/test_train.py's tiny_model_dir):
    a grid of tens of runs trains in seconds."""
    from tl.tokenizer import Tokenizer

    torch.manual_seed(0)
    cfg = EncoderConfig(model_type="bert", vocab_size=30522, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, hidden_act="gelu", hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
                        layer_norm_eps=1e-12, pad_token_id=0)
    folder = tmp_path_factory.mktemp("model") / "tiny-bert"
    Encoder(cfg).save_pretrained(folder)
    Tokenizer.from_checkpoint(minilm_path).save(folder)
    return folder


def tiny_flags(model: Path, results: Path) -> list:
    return ["--model", model, "--data-dir", SAMPLES, "--results-dir", results, "--limit-train", "32",
            "--max-steps", "1", "--epochs", "1",
            "--batch-size", "16", "--evals-per-epoch", "1", "--lr", "1e-3", "--no-progress", "--device", "cpu",
            "--poll", "0.2"]


def records(results: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text()) for p in results.glob("*/record.json")}


def events(results: Path) -> list[dict]:
    return [json.loads(x) for x in (results / "grid-events.jsonl").read_text().splitlines()]


def planned(grid: GridConfig, tasks, seeds, results: Path) -> list:
    base = RunConfig(mode="mtl_all", tasks=tasks, seeds=seeds, support_seeds=seeds, data_dir=str(SAMPLES),
                     results_dir=str(results), limit_train=32)
    return make_plan(grid, base, TrainSettings(batch_size=16, max_steps=1), train_counts(tasks, SAMPLES))


def test_interrupted_grid_then_stats(capsys, tmp_path, tiny_model, monkeypatch):
    """Paper plan over RTE, MRPC, STS-B x 2 seeds and a small size plan (QNLI with MNLI at K = 1/2, 1),
    with one single run made to fail: the grid reports it, skips what depends on it and finishes the
    rest; restarted, it retrains nothing complete and completes everything; tools/stats.py then
    writes the report, the JSON and both figures."""
    monkeypatch.setenv("TL_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is several times faster than two on a busy machine
    try:
        run_interrupted_grid_then_stats(capsys, tmp_path, tiny_model)
    finally:
        torch.set_num_threads(threads)


def run_interrupted_grid_then_stats(capsys, tmp_path, tiny_model):
    results = tmp_path / "results"
    paper = ["--plan", "paper", "--tasks", "rte,mrpc,stsb", "--seeds", "1,2", "--support-seeds", "1,2"]
    size = ["--plan", "size", "--seeds", "1,2", "--support-seeds", "1,2", "--size-k", "1/2,1", "--target-fractions", "1"]
    paper_plan = planned(GridConfig(), ("rte", "mrpc", "stsb"), (1, 2), results)
    size_plan = planned(GridConfig(plan="size", size_k=("1/2", "1"), target_fractions=(1.0,)), ("qnli", "mnli"),
                        (1, 2), results)
    broken = "single__rte__lim32__s2"
    (results / broken).mkdir(parents=True)  # a run of other settings under its id: the recipe refuses it
    (results / broken / "record.json").write_text(json.dumps({"status": "running", "config": {"lr": 1.0}}))

    status, out, err = run_grid(capsys, *paper, *tiny_flags(tiny_model, results))
    assert status == 1
    failures = re.findall(r"^failed: (\S+): (.*)$", out, re.M)
    assert [rid for rid, _ in failures] == [broken], failures  # nothing else failed
    dependents = {r.run_id for r in paper_plan if broken in r.needs}
    assert dependents and f"{broken}: ValueError" in out
    for rid in dependents:
        assert re.search(rf"{re.escape(rid)}: its dependency {broken} failed", out)
    first = records(results)
    done = {rid for rid, rec in first.items() if rec.get("status") == "complete"}
    assert {r.run_id for r in paper_plan} - dependents - {broken} <= done
    mtimes = {rid: (results / rid / "record.json").stat().st_mtime_ns for rid in done}

    import shutil

    shutil.rmtree(results / broken)
    status, out, err = run_grid(capsys, *paper, *tiny_flags(tiny_model, results))
    assert status == 0, out + err
    assert all((results / rid / "record.json").stat().st_mtime_ns == t for rid, t in mtimes.items())
    assert "(skipped)" not in out  # complete support runs are not announced again by every STILTs run
    status, out, err = run_grid(capsys, *size, *tiny_flags(tiny_model, results))
    assert status == 0, out + err

    # every planned run and record is complete, and the recipes wrote exactly the ids the grid planned
    everything = paper_plan + size_plan
    expected = {x for r in everything for x in (r.run_id, *r.outputs)}
    final = records(results)
    assert set(final) == expected
    assert all(rec["status"] == "complete" for rec in final.values())
    for rec in final.values():  # STILTs fine-tunes on the target alone, from its support's best model
        if rec["mode"] == "stilts":
            assert set(rec["train_sizes"]) == {rec["target"]} and rec["support_run"] in expected
    assert "single__mnli__lim32__tgt16__s1" in final  # K = 1/2 of QNLI's 32: a subsampled support run
    started = [e["run_id"] for e in events(results) if e["event"] == "start"]
    assert sorted(set(started)) == sorted({r.run_id for r in everything})
    assert len(started) == len(set(started)) + 1  # trained once each; the broken one tried twice
    # the dry run now reports everything complete
    status, out, err = run_grid(capsys, *paper, *tiny_flags(tiny_model, results), "--dry-run")
    assert f"total: {len(paper_plan)} runs ({len(paper_plan)} complete, 0 partial, 0 to do)" in out

    stats_tool = load_tool("stats")
    out_dir, report_json = tmp_path / "stats", tmp_path / "stats.json"
    assert stats_tool.main(["--results", str(results), "--out", str(out_dir), "--json", str(report_json)]) == 0
    analysis = json.loads(report_json.read_text())
    assert len(analysis["cells"]) == 6 and all(c["n_mtl"] == 2 and c["n_stilts"] == 2 for c in analysis["cells"])
    assert sorted(p["k"] for p in analysis["size_experiment"]) == [0.5, 1.0]
    for name in ("report.md", "figure1.png", "figure1.svg", "figure2.png", "figure2.svg"):
        assert (out_dir / name).stat().st_size > 0, name


def test_two_grids_never_train_the_same_run(tmp_path, tiny_model):
    """Two grid processes with two workers each on one results folder (4 workers, 3 runs, so they
    collide): every run trained once."""
    results = tmp_path / "results"
    env = {**os.environ, "TL_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "tools" / "grid.py"), "--plan", "paper", "--tasks", "rte", "--seeds", "1,2,3",
           "--methods", "single", "--workers", "2", *map(str, tiny_flags(tiny_model, results))]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    started = [e["run_id"] for e in events(results) if e["event"] == "start"]
    expected = {f"single__rte__lim32__s{s}" for s in (1, 2, 3)}
    assert sorted(started) == sorted(expected)  # each exactly once
    assert len({e["pid"] for e in events(results)}) >= 2  # the work was shared by several workers
    assert all(rec["status"] == "complete" for rec in records(results).values())
    assert not list(results.glob("*/grid.lock"))  # every lock released


def test_grid_killed_mid_way_restarts_without_redoing_or_losing(tmp_path, tiny_model):
    """tools/grid.py SIGKILLed once a few runs are complete (one may be half done), then run again:
    no complete run is retrained (record untouched, one start event), a half-done run resumes, and
    every planned run ends complete."""
    import signal
    import time

    results = tmp_path / "results"
    env = {**os.environ, "TL_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "tools" / "grid.py"), "--plan", "paper", "--tasks", "rte,mrpc", "--seeds", "1",
           "--support-seeds", "1", "--methods", "single,mtl", "--mtl-all-samplers", "size",
           *map(str, tiny_flags(tiny_model, results))]
    cmd[cmd.index("--max-steps") + 1] = "4"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if sum(r.get("status") == "complete" for r in records(results).values()) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {rid for rid, r in records(results).items() if r.get("status") == "complete"}
    assert 2 <= len(before) < 4, "the grid finished before it could be killed"
    mtimes = {rid: (results / rid / "record.json").stat().st_mtime_ns for rid in before}

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    final = records(results)
    assert len(final) == 4 and all(r["status"] == "complete" for r in final.values())
    assert all((results / rid / "record.json").stat().st_mtime_ns == t for rid, t in mtimes.items())
    started = [e["run_id"] for e in events(results) if e["event"] == "start"]
    assert all(started.count(rid) == 1 for rid in before)  # complete runs were not started again
    assert set(started) == set(final)


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("args, message", [
    (["--plan", "nope"], "--plan"),
    (["--shard", "3/2"], "--shard 3/2"),
    (["--shard", "x"], "--shard x"),
    (["--mode", "single"], "--mode"),
    (["--methods", "single,foo"], "--methods"),
    (["--support-size", "2x"], "--size-k"),
    (["--plan", "size", "--tasks", "qnli"], "--plan size takes --tasks TARGET,SUPPORT"),
    (["--dry-run", "--throughput", "{missing}"], "no such file"),
    (["--dry-run", "--throughput", "{bad}"], "--throughput"),
    (["--dry-run", "--throughput", "{wrong}"], "useful_tokens_per_second"),
    (["--dry-run", "--throughput", "-3"], "must be positive"),
])
def test_bad_input_is_one_clear_line(capsys, tmp_path, args, message):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "wrong.json").write_text(json.dumps({"model": "m", "tasks": {"RTE": {"tl": {}}}}))
    files = {"{missing}": tmp_path / "missing.json", "{bad}": tmp_path / "bad.json", "{wrong}": tmp_path / "wrong.json"}
    args = [str(files.get(a, a)) for a in args]
    status, out, err = run_grid(capsys, *args, "--data-dir", tmp_path / "none", "--results-dir", tmp_path / "res")
    assert status == 2
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err


@pytest.mark.slow
def test_minilm_grid_then_stats(capsys, tmp_path, minilm_path, monkeypatch):
    """The same tiny study with the real all-MiniLM-L6-v2 (one optimizer step per run, the real
    samples with dev sets of 32): paper plan over RTE, MRPC, STS-B x 2 seeds, then the size plan; tools/stats.py reads the
    records and writes the report, the JSON and both figures."""
    monkeypatch.setenv("TL_CACHE", str(tmp_path / "cache"))
    results, data = tmp_path / "results", tmp_path / "data"
    for task in ("RTE", "MRPC", "STS-B", "QNLI", "MNLI"):  # the real samples, dev sets cut to 32 rows for time
        (data / task).mkdir(parents=True)
        for f in (SAMPLES / task).glob("*.tsv"):
            lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
            (data / task / f.name).write_text("".join(lines if f.name == "train.tsv" else lines[:33]), encoding="utf-8")
    try:
        flags = tiny_flags(minilm_path, results)
        flags[flags.index("--lr") + 1] = "1e-4"
        flags[flags.index("--data-dir") + 1] = data
        for plan in (["--plan", "paper", "--tasks", "rte,mrpc,stsb"],
                     ["--plan", "size", "--size-k", "1/2,1", "--target-fractions", "1"]):
            status, out, err = run_grid(capsys, *plan, "--seeds", "1,2", "--support-seeds", "1,2", *flags)
            assert status == 0, out + err
        final = records(results)
        assert len(final) == 6 + 24 + 6 + 6 * 3 + 14 and all(r["status"] == "complete" for r in final.values())
        assert {r["model"] for r in final.values()} == {str(minilm_path)}
        stats_tool = load_tool("stats")
        out_dir, report_json = tmp_path / "stats", tmp_path / "stats.json"
        assert stats_tool.main(["--results", str(results), "--out", str(out_dir), "--json", str(report_json)]) == 0
        analysis = json.loads(report_json.read_text())
        assert len(analysis["cells"]) == 6 and all(c["n_mtl"] == 2 and c["n_stilts"] == 2 for c in analysis["cells"])
        assert analysis["summary"]["n_cells"] == 6
        assert sorted(p["k"] for p in analysis["size_experiment"]) == [0.5, 1.0]
        for name in ("report.md", "figure1.png", "figure1.svg", "figure2.png", "figure2.svg"):
            assert (out_dir / name).stat().st_size > 0, name
    finally:
        import shutil

        shutil.rmtree(results, ignore_errors=True)  # ~50 best/ models of 90 MB
