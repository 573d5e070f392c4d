"""One writer per run, across processes and machines: the per-run lock with its heartbeat, SIGTERM as
Ctrl-C, and the grid's event log (docs/RELIABILITY.md, "Run folders, locks and interrupted runs").
The library trains without them; tools/train.py passes `hold_run` to `tl.study.jobs.run`, and the grid's
workers (run.py) hold each run's lock while they train it.

Imports tl.runs.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import torch.distributed as dist

from tl.runs import append_log, resolve_dir, writing

# <results>/<run_id>/grid.lock, created with O_CREAT | O_EXCL, holds {pid, host, time, token}; its
# holder refreshes its mtime every HEARTBEAT_SECONDS (docs/RELIABILITY.md, "Run folders, locks").
HEARTBEAT_SECONDS = 60.0
LOCK_TIMEOUT = 600.0  # a lock without a heartbeat this long is stale, whatever host it names
TORN_LOCK_SECONDS = 10.0  # a lock still empty this long lost its writer between O_EXCL and write
_HELD: set[str] = set()  # the locks this process holds (hold_run is re-entrant)


class RunBusy(RuntimeError):
    """Another live process holds the run's lock."""


def lock_path(results: Path, run_id: str) -> Path:
    return Path(results) / run_id / "grid.lock"


def lock_owner(path: Path) -> dict | None:
    """The lock's {pid, host, time, token} and its last `heartbeat` (the file's mtime), or None when
    there is no lock; an empty or torn file reads as {pid: None, host: None, heartbeat}."""
    try:
        heartbeat = Path(path).stat().st_mtime
        owner = json.loads(Path(path).read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        owner = {}
    return {"pid": None, "host": None, **(owner if isinstance(owner, dict) else {}), "heartbeat": heartbeat}


def _stale(owner: dict) -> bool:
    silent = time.time() - owner["heartbeat"]
    if owner["pid"] is None:
        return silent > TORN_LOCK_SECONDS
    if silent > LOCK_TIMEOUT or owner["host"] != socket.gethostname():
        return silent > LOCK_TIMEOUT  # another host's process cannot be checked
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # someone else's live process
    return False


def live_lock(path: Path) -> dict | None:
    """The lock's owner unless there is no lock or it is stale."""
    owner = lock_owner(path)
    return None if owner is None or _stale(owner) else owner


def acquire_lock(path: Path) -> str | None:
    """Take the lock: a token for `release_lock`, or None when a live process holds it. A stale lock is
    renamed away before it is taken over: one rename wins, so only one process takes it over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = lock_owner(path)
    if owner is not None and not _stale(owner):
        return None
    if owner is not None:
        aside = path.with_name(f"{path.name}.stale-{os.getpid()}")
        with suppress(FileNotFoundError):  # another process took it over first
            os.replace(path, aside)
            if lock_owner(aside) != owner:  # we moved a fresh lock (or a fresh heartbeat): put it back
                with suppress(FileExistsError):
                    os.link(aside, path)
            aside.unlink()
    token = os.urandom(16).hex()
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None  # another process took it first
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(), "token": token}, f)
    return token


def release_lock(path: Path, token: str) -> None:
    """Remove the lock if it is still ours."""
    if (lock_owner(path) or {}).get("token") == token:
        Path(path).unlink(missing_ok=True)


@contextmanager
def hold_run(results: Path, run_id: str):
    """Train run `run_id` as its one writer (rank 0 holds the lock, re-entrant, with a heartbeat), or
    raise RunBusy naming the holder. If the body fails, the run's temporaries go, and so does a run
    folder this call created unless it holds a checkpoint."""
    path = lock_path(results, run_id)
    key = str(path.resolve())
    if (dist.is_initialized() and dist.get_rank() != 0) or key in _HELD:
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

    def heartbeat():  # while the lock is still ours
        while not stop.wait(HEARTBEAT_SECONDS) and (lock_owner(path) or {}).get("token") == token:
            with suppress(OSError):
                os.utime(path)

    threading.Thread(target=heartbeat, daemon=True).start()
    _HELD.add(key)
    try:
        yield
    except BaseException:
        for tmp in [*path.parent.glob("*.tmp"), *path.parent.glob("best/*.tmp")]:  # left by a killed writer
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        if created and resolve_dir(path.parent / "checkpoint") is None:
            shutil.rmtree(path.parent, ignore_errors=True)
        raise
    finally:
        stop.set()
        _HELD.remove(key)
        release_lock(path, token)


@contextmanager
def interruptible(enabled: bool = True):
    """While the body runs, SIGTERM (a Slurm time limit, `kill`) raises KeyboardInterrupt as Ctrl-C does;
    later signals are ignored, so the way out (locks, temporaries, the event log) completes. Main thread only."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: set outside Python


def log_event(results: Path, run_id: str, event: str, **extra) -> None:
    """One line of <results>/grid-events.jsonl: who started, finished or failed which run."""
    append_log(Path(results) / "grid-events.jsonl", {"run_id": run_id, "event": event, "pid": os.getpid(),
                                                    "host": socket.gethostname(), "time": round(time.time(), 3),
                                                    **extra})
