"""The results folder, and the only code that reads or writes it: run records, logs, checkpoint
folders, atomic writes and per-run locks (STYLE.md principle 19; nanochat's checkpoint_manager).

Layout (ARCHITECTURE.md, "Run record"):
    <results>/<run_id>/record.json    the run record; status "complete" only in its final write
    <results>/<run_id>/config.json    the run's resolved settings
    <results>/<run_id>/log.jsonl      one line per dev evaluation
    <results>/<run_id>/checkpoint/    latest resume state (deleted when the run completes)
    <results>/<run_id>/best/          the best model (Hugging Face layout + heads)
    <results>/<run_id>/grid.lock      who is training the run now (tools/train.py, tools/grid.py)

Every file is written atomically (a temp file renamed into place), so a reader sees the old file or
the new one, never half of one; folders are swapped with two renames (`swap_dir`). A write that fails
(disk full, read-only folder) is one OSError naming the path (`writing`). Under DDP only rank 0
writes. One scanning rule finds records: `<results>/*/record.json` (`complete_records`). A run is
trained by one process at a time (`hold_run`), and its data are part of its identity (`check_data`).

Imports no tl file.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import torch.distributed as dist
from safetensors import SafetensorError

SCHEMA = 1
# settings that change how a run is executed, not what it computes: a run found under the same id
# with other values of these is the same run
NOT_IDENTITY = {"results_dir", "cache_dir", "seeds", "device", "progress", "support_seeds", "data_dir",
                "reference_scores", "eval_batch_size", "save_every", "tasks", "mode", "keep_best", "compile",
                "keep_checkpoint"}
ONE_TASK_UNUSED = {"sampler", "schedule", "temperature"}


def run_id(mode: str, tasks: list[str], seed: int, *, sampler: str = "", schedule: str = "heterogeneous",
           protocol: str = "tl", limit_train: int = 0, target_size: int = 0, support_size: str = "") -> str:
    """The folder name of a run, from plain values: `mtl__rte+mnli__dynamic__s42`,
    `authors__mtl__rte+mnli__uniform__s42`. `tasks`: the target first. The sampler and schedule name
    multi-task runs only; the sizes appear when set. Settings that are not in the id are checked
    against the record's config when a run is found under it (`check_existing`)."""
    parts = [mode, "+".join(tasks).lower().replace("-", "")]
    if mode in ("mtl", "mtl_all"):
        parts.append(sampler)
        if schedule != "heterogeneous":
            parts.append(schedule)
    if limit_train:
        parts.append(f"lim{limit_train}")
    if target_size:
        parts.append(f"tgt{target_size}")
    if support_size and mode != "single":
        parts.append("sup" + support_size.replace("/", "_"))
    parts.append(f"s{seed}")
    return "__".join((["authors"] if protocol == "authors" else []) + parts)  # tl's ids are as before


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextmanager
def writing(path: Path):
    """The body's writes under `path`: a failure (disk full, read-only folder: an OSError, or torch.save's
    RuntimeError and safetensors' SafetensorError, which name no file) is one OSError naming `path`."""
    try:
        yield
    except (OSError, SafetensorError, RuntimeError) as e:
        if (isinstance(e, RuntimeError) and "inline_container" not in str(e)) or getattr(e, "errno", 0) is None:
            raise  # not torch.save's write error, or already one line of ours
        why = getattr(e, "strerror", None)
        with suppress(OSError):  # torch.save says "unexpected pos 576 vs 534" when the disk is full
            why = why or ("No space left on device" if shutil.disk_usage(Path(path).parent).free < 1 << 20 else None)
        raise OSError(f"{path}: cannot write ({why or str(e).strip().splitlines()[0]}); free some space or make "
                      f"the folder writable, then run the same command again") from None


def write_json(path: Path, obj) -> None:
    """Write JSON atomically. Under DDP only rank 0 writes (every rank holds the same values; two
    writers would race on the temp file)."""
    if _rank() != 0:
        return
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        try:
            with open(tmp, "w") as f:
                json.dump(obj, f, indent=1, default=_json_default)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def read_json(path: Path, fix: str = "delete it and run the same command again"):
    """The JSON in `path`; a corrupt file is a one-line error naming it and saying how to recover (`fix`)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); {fix}") from None


def append_log(path: Path, entry: dict) -> None:
    """One line of log.jsonl (rank 0 only)."""
    if _rank() != 0:
        return
    with writing(path), open(path, "a") as f:
        f.write(json.dumps(entry, default=_json_default) + "\n")


def write_log(path: Path, entries: list[dict]) -> None:
    """log.jsonl made of `entries` (rank 0 only): on resume, the checkpoint's history, so that lines
    written after the checkpoint, or torn by a kill, are gone (they are written again)."""
    if _rank() != 0 or (not entries and not Path(path).exists()):
        return
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        tmp.write_text("".join(json.dumps(e, default=_json_default) + "\n" for e in entries))
        os.replace(tmp, path)


def swap_dir(tmp: Path, final: Path) -> None:
    """Replace folder `final` by `tmp`. A kill between the two renames leaves `final.old`, which
    `resolve_dir` still finds, so a finished checkpoint is never lost."""
    old = final.with_name(final.name + ".old")
    if old.exists() and final.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def resolve_dir(final: Path) -> Path | None:
    """`final`, or `final.old` left by a kill inside `swap_dir`; None when neither holds a model/state."""
    final = Path(final)
    for candidate in (final, final.with_name(final.name + ".old")):
        if (candidate / "state.json").exists() or (candidate / "model.safetensors").exists():
            return candidate
    return None


def drop_temporaries(run_dir: Path) -> None:
    """Remove what a killed writer leaves in a run folder: `*.tmp` files and folders (also in best/)."""
    for tmp in [*Path(run_dir).glob("*.tmp"), *Path(run_dir).glob("best/*.tmp")]:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def fresh_dir(path: Path) -> Path:
    """An empty folder at `path` (a leftover from a killed writer is removed)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def drop_checkpoints(run_dir: Path) -> None:
    """Delete checkpoint/ (and its .tmp/.old) of a complete run: the resume state is 3x the model."""
    if _rank() != 0:
        return
    for folder in Path(run_dir).glob("checkpoint*"):
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------------------------- records
def read_record(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "record.json"
    if not path.exists():
        return None
    record = read_json(path)
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a run record (it holds {json.dumps(record)[:40]}); delete it and run "
                         f"the same command again")
    return record


def identity(config: dict) -> dict:
    """The settings that make a run what it is. A one-task run never reads the multi-task sampler's
    settings, so they are not part of its identity. The seeds of the single runs a run builds on are:
    STILTs continues from one of them, dynamic sampling (without --reference-scores) averages them."""
    mode = config.get("mode")
    skip = NOT_IDENTITY | (ONE_TASK_UNUSED if mode in ("single", "stilts") else set())
    if builds_on_singles(mode, config.get("sampler"), config.get("reference_scores")):
        skip = skip - {"support_seeds"}
    return {k: v for k, v in config.items() if k not in skip}


def builds_on_singles(mode: str, sampler, reference_scores) -> bool:
    """Whether a run starts from single runs (STILTs: its support's best) or reads their scores
    (dynamic sampling without --reference-scores): the recipes train those first."""
    return mode == "stilts" or (mode in ("mtl", "mtl_all") and str(sampler).startswith("dynamic")
                                and not reference_scores)


def check_existing(run_dir: Path, config: dict) -> dict | None:
    """The complete record under `run_dir`, None to (re)start; a clash of settings is an error."""
    record = read_record(run_dir)
    if record is None:
        return None
    # compare as JSON sees them (tuples become lists)
    old, new = identity(record.get("config", {})), identity(json.loads(json.dumps(config, default=list)))
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in diff[:4])
        raise ValueError(f"{run_dir} holds a run with other settings ({shown}); use another --results-dir "
                         f"or delete that folder")
    return record if record.get("status") == "complete" else None


def check_data(run_dir: Path, data: dict, data_dir) -> None:
    """A partial run resumes on the data it started with: `data` ({"RTE/train.tsv": sha256}, every
    file read, relative to `data_dir`) must match its config.json's. Identity is content, not paths:
    the same files in another folder resume."""
    config = Path(run_dir) / "config.json"
    if resolve_dir(Path(run_dir) / "checkpoint") is None or not config.exists():
        return  # nothing to resume: the run starts again on these files
    old = read_json(config)
    old = old.get("data") if isinstance(old, dict) and old.get("data") else data  # runs of older tl: unchecked
    changed = sorted(k for k in set(old) | set(data) if old.get(k) != data.get(k))
    if changed:
        name = changed[0]
        raise ValueError(f"{Path(data_dir) / name}: not the file the partial run {Path(run_dir).name} was trained "
                         f"on (sha256 {str(old.get(name))[:12]} then, {str(data.get(name))[:12]} now); put that "
                         f"file back, or delete {run_dir} to start the run again")


def complete_records(results_dir: Path) -> list[dict]:
    """Every complete record under `results_dir`, i.e. `<results_dir>/*/record.json` (the one rule)."""
    out = []
    for path in sorted(Path(results_dir).glob("*/record.json")):
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a torn record is a run to redo, not a result
        if isinstance(record, dict) and record.get("status") == "complete":
            out.append(record)
    return out


def check_writable(results: Path) -> None:
    """Fail at once, not after hours of training, when the results folder cannot be written."""
    results = Path(results)
    if results.exists() and not results.is_dir():
        raise NotADirectoryError(f"--results-dir {results} is a file, not a folder; choose a folder")
    probe = results / f".write-test-{os.getpid()}"
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
    except OSError as e:
        raise PermissionError(f"--results-dir {results} is not writable ({e.strerror}); choose another "
                              f"folder") from None
    finally:
        with suppress(OSError):
            probe.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- locks
# A run is trained under <results>/<run_id>/grid.lock, created with O_CREAT | O_EXCL (pid, host, time,
# token inside), so two processes, or two machines on a shared folder, never train the same run
# (`hold_run`: tools/train.py and each grid job alike). Its holder refreshes the file's mtime every
# HEARTBEAT_SECONDS; a lock without a heartbeat for LOCK_TIMEOUT seconds is stale whatever host it
# names, and a lock of a dead process on this host is stale at once. A stale lock is taken over.
LOCK_NAME = "grid.lock"
EVENTS_NAME = "grid-events.jsonl"
HEARTBEAT_SECONDS = 60.0
LOCK_TIMEOUT = 600.0
# a lock file still empty (or torn) this long after its creation lost its writer between O_EXCL and write
TORN_LOCK_SECONDS = 10.0
_HELD: dict[str, str] = {}  # the locks this process holds -> their tokens (hold_run is re-entrant)


class RunBusy(RuntimeError):
    """Another live process holds the run's lock."""


def lock_path(results: Path, run_id: str) -> Path:
    return Path(results) / run_id / LOCK_NAME


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def lock_owner(path: Path) -> dict | None:
    """The lock's content ({pid, host, time, token}) and its last `heartbeat` (the file's mtime), or None
    when there is no lock; an empty or torn file reads as {pid: None, host: None, heartbeat}."""
    try:
        heartbeat = Path(path).stat().st_mtime
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except OSError:
        text = ""
    try:
        owner = json.loads(text) if text else {}
    except json.JSONDecodeError:
        owner = {}
    return {"pid": None, "host": None, **(owner if isinstance(owner, dict) else {}), "heartbeat": heartbeat}


def _stale(owner: dict, host: str) -> bool:
    """A lock without a heartbeat for LOCK_TIMEOUT, of a dead process on this host, or one whose
    writer died before filling it in."""
    silent = time.time() - owner["heartbeat"]
    if silent > LOCK_TIMEOUT:
        return True
    if owner.get("pid") is None:
        return silent > TORN_LOCK_SECONDS
    return owner.get("host") == host and not _pid_alive(int(owner["pid"]))


def live_lock(path: Path) -> dict | None:
    """The lock's owner unless there is no lock or it is stale."""
    owner = lock_owner(path)
    if owner and _stale(owner, socket.gethostname()):
        return None
    return owner


def acquire_lock(path: Path) -> str | None:
    """Take the lock file atomically (O_CREAT | O_EXCL); returns a token for `release_lock`, or None
    when a live process holds it. A stale lock is taken over: it is renamed away first (one rename
    wins), so two processes cannot both take it over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    for _ in range(3):
        token = uuid.uuid4().hex
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = lock_owner(path)
            if owner is None:
                continue  # released meanwhile: try again
            if not _stale(owner, host):
                return None
            stale = path.with_name(f"{path.name}.stale-{os.getpid()}")
            try:
                os.replace(path, stale)
            except FileNotFoundError:
                continue  # another process took it over first
            if lock_owner(stale) != owner:  # we moved a fresh lock (or a fresh heartbeat): put it back
                try:
                    os.link(stale, path)
                except FileExistsError:
                    pass
            stale.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": host, "time": time.time(), "token": token}, f)
        return token
    return None


def release_lock(path: Path, token: str) -> None:
    """Remove the lock if it is still ours."""
    owner = lock_owner(path)
    if owner is not None and owner.get("token") == token:
        Path(path).unlink(missing_ok=True)


def _heartbeat(path: Path, token: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            if (lock_owner(path) or {}).get("token") != token:
                return  # no longer ours
            os.utime(path)
        except OSError:
            return


@contextmanager
def hold_run(results: Path, run_id: str):
    """Train run `run_id` as its one writer: hold its lock while the body runs (re-entrant in a
    process; refreshed by a heartbeat thread), or raise RunBusy naming the holder. When the body fails
    or is interrupted, the run's temporary files go, and a run folder this call created goes too unless
    a checkpoint was written: a run that fails before its first checkpoint leaves nothing. Under DDP
    only rank 0 takes the lock."""
    path = lock_path(results, run_id)
    key = str(path.resolve())
    if _rank() != 0 or key in _HELD:
        yield
        return
    created = not path.parent.exists()
    with writing(path):
        token = acquire_lock(path)
    if token is None:
        owner = lock_owner(path) or {"heartbeat": time.time()}
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["time"])) if owner.get("time") else "?"
        raise RunBusy(f"{path.parent} is being trained by pid {owner.get('pid')} on {owner.get('host')} since {since} "
                      f"(last heartbeat {time.time() - owner['heartbeat']:.0f} s ago; stale {LOCK_TIMEOUT:.0f} s after "
                      f"its last); wait for it to finish, or stop that process")
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(path, token, stop), daemon=True).start()
    _HELD[key] = token
    try:
        yield
    except BaseException:
        drop_temporaries(path.parent)
        if created and resolve_dir(path.parent / "checkpoint") is None:
            shutil.rmtree(path.parent, ignore_errors=True)
        raise
    finally:
        stop.set()
        del _HELD[key]
        release_lock(path, token)


@contextmanager
def interruptible(enabled: bool = True):
    """While the body runs, SIGTERM (a Slurm time limit, `kill`, a grid stopping its workers) raises
    KeyboardInterrupt as Ctrl-C does, and after the first of them further ones are ignored, so that the
    way out (locks released, temporaries removed, the event logged) is not cut short. Main thread only."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.getsignal(s) for s in signals]

    def interrupt(signum, frame):
        for s in signals:
            signal.signal(s, signal.SIG_IGN)
        raise KeyboardInterrupt

    for s in signals:
        signal.signal(s, interrupt)
    try:
        yield
    finally:
        for s, handler in zip(signals, previous):
            signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: set outside Python


def log_event(results: Path, run_id: str, event: str, **extra) -> None:
    """Append one line to <results>/grid-events.jsonl: who started, finished or failed which run."""
    line = json.dumps({"run_id": run_id, "event": event, "pid": os.getpid(), "host": socket.gethostname(),
                       "time": round(time.time(), 3), **extra}) + "\n"
    fd = os.open(Path(results) / EVENTS_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())  # one write with O_APPEND: lines of concurrent writers do not interleave
    finally:
        os.close(fd)
