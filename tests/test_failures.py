"""Failures of a run as a careless user or a hostile machine causes them (issue 15, part B): a second
writer, changed data, Ctrl-C and SIGTERM (also of a grid with two workers), a full or read-only disk,
torn or truncated files in a run folder, a damaged token cache. Each case: the exit code, one line
naming the file, and nothing outside the run's folder changed. docs/RELIABILITY.md lists them."""
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import SafetensorError

import tl.study.locks
import tl.train
from tl.data import load_tokenized
from tl.model import Encoder, EncoderConfig
from tl.study.locks import LOCK_TIMEOUT, hold_run, live_lock, lock_owner
from tl.tasks import get_task
from tl.tokenizer import Tokenizer
from helpers import load_tool

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
RUN = "single__rte__lim16__s1"


train_tool = load_tool("train")


def flags(partial: Path, root: Path, seed: int = 1, data: Path = SAMPLES) -> list[str]:
    """A tiny single run on the RTE samples: 2 steps an epoch, 2 epochs, a checkpoint at each epoch;
    the model of `partial` (its path is part of a run's identity), results and cache under `root`."""
    return ["--mode", "single", "--tasks", "rte", "--model", str(partial / "tiny-bert"), "--data-dir", str(data),
            "--results-dir", str(root / "results"), "--cache-dir", str(root / "cache"), "--seeds", str(seed),
            "--limit-train", "16", "--max-len", "32", "--batch-size", "8", "--epochs", "2", "--evals-per-epoch", "1",
            "--lr", "1e-3", "--keep-checkpoint", "--no-progress", "--device", "cpu"]


def train(args: list[str]) -> tuple[int, list[str]]:
    """tools/train.py in this process: (exit status, the non-empty lines of its stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = train_tool.main(args)
        except SystemExit as e:
            status = e.code
    return status, [x for x in err.getvalue().splitlines() if x.strip() and "Warning" not in x]


def snapshot(root: Path, *skip: Path) -> dict:
    """Every file under `root` but those under `skip`: (size, mtime) by path."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and not any(p.is_relative_to(s) for s in skip)}


def one_line(status: int, lines: list[str], code: int, *words: str) -> None:
    assert status == code and len(lines) == 1, (status, lines)
    assert all(w in lines[0] for w in words), (lines[0], words)


def stop_after_checkpoint(signum: int, at: int = 1):
    """save_checkpoint that sends this process `signum` after its `at`-th save (0: before the first)."""
    real, saves = tl.train.save_checkpoint, []

    def save(*args):
        if at:
            real(*args)
        saves.append(1)
        if len(saves) >= max(at, 1):
            signal.raise_signal(signum)
    return save


@pytest.fixture(scope="module")
def partial(tmp_path_factory, minilm_path) -> Path:
    """A folder with a tiny model, the token cache and `results/` holding RUN stopped by SIGTERM right
    after its checkpoint at step 2 (of 4). Tests copy it (`copy_of`)."""
    root = tmp_path_factory.mktemp("partial")
    torch.manual_seed(0)
    cfg = EncoderConfig(model_type="bert", vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, hidden_act="gelu", hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
                        layer_norm_eps=1e-12, pad_token_id=0)
    Encoder(cfg).save_pretrained(root / "tiny-bert")
    Tokenizer.from_checkpoint(minilm_path).save(root / "tiny-bert")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tl.train, "save_checkpoint", stop_after_checkpoint(signal.SIGTERM))
        status, lines = train(flags(root, root))
    root.joinpath("stopped.json").write_text(json.dumps([status, lines]))
    return root


def copy_of(partial: Path, tmp_path: Path) -> Path:
    for name in ("results", "cache"):
        shutil.copytree(partial / name, tmp_path / name, symlinks=True)
    return tmp_path


# ---------------------------------------------------------------------------------------------
# interrupted runs


def test_sigterm_and_ctrl_c_say_where_and_leave_nothing_half_made(partial, tmp_path):
    """SIGTERM (a Slurm time limit) after the checkpoint of step 2: exit 130, one line, the checkpoint
    kept, no temporaries, the lock released. Ctrl-C before the first checkpoint leaves no run folder at
    all. The stopped run then resumes to the end, also with its log torn by a kill in the middle of a
    line (rewritten from the checkpoint's history) and from the same files in another folder (a run's
    data identity is their content, not their path)."""
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    status, lines = json.loads((partial / "stopped.json").read_text())
    one_line(status, lines, 130, "interrupted at step 2; run the same command to resume")
    run_dir = partial / "results" / RUN
    assert (run_dir / "checkpoint" / "state.json").exists() and not list(run_dir.rglob("*.tmp"))
    assert not (run_dir / "grid.lock").exists()
    root = copy_of(partial, tmp_path)
    before = snapshot(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tl.train, "save_checkpoint", stop_after_checkpoint(signal.SIGINT, at=0))
        status, lines = train(flags(partial, root, seed=2))
    one_line(status, lines, 130, "interrupted at step 2; run the same command to resume")
    assert not (root / "results" / RUN.replace("s1", "s2")).exists()  # failed before its first checkpoint
    assert snapshot(root) == before
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # put back
    log = root / "results" / RUN / "log.jsonl"
    log.write_text(log.read_text() + '{"step": 3, "epoch": 1.')
    status, lines = train(flags(partial, root, data=shutil.copytree(SAMPLES, tmp_path / "same-files")))
    record = json.loads((root / "results" / RUN / "record.json").read_text())
    assert status == 0 and record["status"] == "complete" and record["steps"] == 4, lines
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [2, 4]


def test_grid_with_two_workers_stopped_by_sigterm(tmp_path, partial):
    """tools/grid.py --workers 2, both workers training, the grid's process group sent SIGTERM (as
    Slurm does at its time limit; Ctrl-C sends SIGINT the same way): exit 130, both runs logged
    `interrupted` in grid-events.jsonl, no lock and no temporary file left."""
    root = copy_of(partial, tmp_path)
    results = root / "grid"
    cmd = [sys.executable, str(ROOT / "tools" / "grid.py"), "--plan", "paper", "--tasks", "rte,mrpc", "--seeds", "1",
           "--methods", "single", "--workers", "2", "--poll", "0.1", *flags(partial, root)[4:]]
    cmd[cmd.index("--results-dir") + 1], cmd[cmd.index("--epochs") + 1] = str(results), "1000"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    log = results / "grid-events.jsonl"
    events = lambda: [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    try:
        deadline = time.time() + 180  # three interpreters start torch: slow on a busy machine
        while time.time() < deadline and sum(e["event"] == "start" for e in events()) < 2:
            time.sleep(0.05)
        assert len(list(results.glob("*/grid.lock"))) == 2, "both workers should be at work"
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a failed check: stop the grid (it trains for 1000 epochs)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130 and "grid: interrupted; run the same command to resume" in err, (out, err)
    stopped = sorted(e["run_id"] for e in events() if e["event"] == "interrupted")
    assert stopped == ["single__mrpc__lim16__s1", "single__rte__lim16__s1"], events()
    assert not list(results.glob("*/grid.lock")) and not list(results.rglob("*.tmp"))


# ---------------------------------------------------------------------------------------------
# one writer per run; the data are part of a run's identity


def test_a_second_writer_is_refused_naming_the_first(partial, tmp_path):
    root = copy_of(partial, tmp_path)
    lock = root / "results" / RUN / "grid.lock"
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "time": time.time() - 60, "token": "t"}
    lock.write_text(json.dumps(holder))  # a live process of this host, heartbeat now
    before = snapshot(root)
    status, lines = train(flags(partial, root))
    one_line(status, lines, 2, str(root / "results" / RUN), f"pid {os.getppid()} on {socket.gethostname()} since")
    assert snapshot(root) == before
    # another host's lock: alive while its heartbeat is fresh, stale LOCK_TIMEOUT after it stopped
    lock.write_text(json.dumps({**holder, "host": "elsewhere"}))
    assert live_lock(lock) is not None
    os.utime(lock, (time.time() - LOCK_TIMEOUT - 1,) * 2)
    assert live_lock(lock) is None


def test_lock_heartbeat_and_reentrance(tmp_path, monkeypatch):
    """hold_run refreshes its lock's mtime while held, is re-entrant in its process (the grid holds
    it around tools/train.py's recipe, which takes it again) and releases it on the way out."""
    monkeypatch.setattr(tl.study.locks, "HEARTBEAT_SECONDS", 0.05)
    lock = tmp_path / "r" / "grid.lock"
    with hold_run(tmp_path, "r"):
        os.utime(lock, (0, 0))
        with hold_run(tmp_path, "r"):  # nested: no deadlock, no second lock
            time.sleep(0.5)
        assert lock.exists() and time.time() - lock_owner(lock)["heartbeat"] < 5
    assert not lock.exists()


def test_resume_on_other_data_is_refused_naming_the_file(partial, tmp_path):
    """A partial run resumes only on the files it started with (the same files in another folder do:
    test_sigterm_and_ctrl_c_...): --data-dir with a changed train.tsv is one line naming it."""
    root = copy_of(partial, tmp_path)
    data = shutil.copytree(SAMPLES, tmp_path / "other-glue")
    with open(data / "RTE" / "train.tsv", "a") as f:
        f.write((data / "RTE" / "train.tsv").read_text().splitlines()[1] + "\n")
    before = snapshot(root, root / "cache")
    status, lines = train(flags(partial, root, data=data))
    one_line(status, lines, 2, str(data / "RTE" / "train.tsv"), "partial run", "delete")
    assert snapshot(root, root / "cache") == before  # the token cache gained the new file's tokens


# ---------------------------------------------------------------------------------------------
# full disks, read-only folders, damaged files


def raises(error: Exception):
    def fail(*args, **kwargs):
        raise error
    return fail


@pytest.mark.parametrize("target, error, path, why", [
    ("tl.model.save_file", SafetensorError("Error while serializing: I/O error: Read-only file system (os error 30)"),
     "checkpoint", "Read-only file system"),
    ("os.fsync", OSError(28, "No space left on device"), "config.json", "No space left on device"),
])
def test_failed_writes_name_the_path(partial, tmp_path, monkeypatch, target, error, path, why):
    """A write of the resumed run fails (its config.json; its checkpoint at step 4): exit 2, one line
    naming what could not be written and why; the checkpoint of step 2 is intact, no temporary file is
    left. (torch.save's error: test_a_run_failing_before_its_first_checkpoint_leaves_no_folder.)"""
    root = copy_of(partial, tmp_path)
    run_dir = root / "results" / RUN
    kept = snapshot(run_dir / "checkpoint")
    before = snapshot(root, run_dir)
    monkeypatch.setattr(target, raises(error))
    status, lines = train(flags(partial, root))
    one_line(status, lines, 2, str(run_dir / path), why)
    assert snapshot(root, run_dir) == before and not list(run_dir.rglob("*.tmp"))
    assert snapshot(run_dir / "checkpoint") == kept


def test_a_run_failing_before_its_first_checkpoint_leaves_no_folder(partial, tmp_path, monkeypatch):
    """torch.save on a full disk: "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534",
    naming no file. A new run failing so at its first checkpoint: one line naming it; no run folder left."""
    root = copy_of(partial, tmp_path)
    before = snapshot(root)
    full = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    monkeypatch.setattr(torch, "save", raises(full))
    status, lines = train(flags(partial, root, seed=3))
    one_line(status, lines, 2, str(root / "results" / RUN.replace("s1", "s3") / "checkpoint"), "cannot write")
    assert snapshot(root) == before and sorted(p.name for p in (root / "results").iterdir()) == [RUN]


def tear(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage, named, fix", [
    (lambda d: tear(d / "record.json"), "record.json", "delete it"),
    (lambda d: (d / "record.json").write_text("null"), "record.json", "not a run record"),
    (lambda d: tear(d / "checkpoint" / "state.json"), "checkpoint/state.json", "delete"),
    (lambda d: tear(d / "checkpoint" / "optim.pt"), "checkpoint/optim.pt", "truncated or damaged"),
])
def test_damaged_files_of_a_run_name_themselves(partial, tmp_path, damage, named, fix):
    root = copy_of(partial, tmp_path)
    run_dir = root / "results" / RUN
    damage(run_dir)
    before = snapshot(root, run_dir)
    status, lines = train(flags(partial, root))
    one_line(status, lines, 2, str(run_dir / named), fix)
    assert snapshot(root, run_dir) == before


def test_results_dir_that_is_a_file(partial, tmp_path):
    (tmp_path / "results").write_text("x")
    args = flags(partial, tmp_path)
    args[args.index("--results-dir") + 1] = str(tmp_path / "results")
    status, lines = train(args)
    one_line(status, lines, 2, f"--results-dir {tmp_path / 'results'} is a file")


# ---------------------------------------------------------------------------------------------
# the token cache: checked at every load, rebuilt when damaged, never unpickled


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class RunsCode:
    """Unpickling this creates the folder `marker`: what a planted cache file could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_damaged_token_cache_is_rebuilt_never_read(tmp_path, minilm_path):
    tokenizer, spec = Tokenizer.from_checkpoint(minilm_path), get_task("rte")
    load = lambda: load_tokenized(spec, "dev", tokenizer, 32, SAMPLES, tmp_path / "cache", progress=False)
    good = {name: np.array(a) for name, a in vars(load()).items()}  # copies: the cache's files are memory-mapped
    (folder,) = (tmp_path / "cache").iterdir()
    marker = tmp_path / "pwned"
    meta = json.loads((folder / "meta.json").read_text())

    def planted(f):  # an object array, with meta.json made to match it
        np.save(f / "ids.npy", np.array([RunsCode(marker)], dtype=object), allow_pickle=True)
        meta["sizes"]["ids"], meta["sha256"]["ids"] = (f / "ids.npy").stat().st_size, sha256(f / "ids.npy")
        (f / "meta.json").write_text(json.dumps(meta))

    for damage in (lambda f: tear(f / "ids.npy"),  # truncated
                   lambda f: (f / "labels.npy").write_bytes((f / "labels.npy").read_bytes()[:-1] + b"\x07"),  # altered
                   planted):
        damage(folder)
        with pytest.warns(UserWarning, match="token cache .* is damaged"):
            again = load()
        for name in ("ids", "type_ids", "offsets", "lengths", "labels"):
            assert np.array_equal(getattr(again, name), good[name]), name
        assert not marker.exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]  # nothing left aside
