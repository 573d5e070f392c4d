"""Running the grid's plan (docs/GRID.md "Execution"): each job under its run's lock, in this process
or in worker subprocesses, sharded over machines (tools/grid.py writes the Slurm array script). Complete
jobs are skipped, partial ones resumed (tl/study/jobs.py); a shard runs a missing dependency itself unless
another process holds its lock, then it waits. A failed job is reported and the jobs needing it skipped.

Imports tl.recipes, tl.train (public functions only), tl/study/jobs.py, locks.py and plan.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

from tqdm.auto import tqdm

from tl.recipes import Job, RunConfig
from tl.study.jobs import Context, train_job
from tl.study.locks import RunBusy, hold_run, interruptible, live_lock, lock_path, log_event
from tl.study.plan import run_status
from tl.train import TrainSettings


def execute_locked(job: Job) -> str:
    """Train one job (its needs complete) under its lock here: 'done', 'busy' (another process holds
    it), or the recipe's exception, logged as `failed` or `interrupted`."""
    results = Path(job.cfg.results_dir)
    try:
        with hold_run(results, job.run_id):
            if run_status(results, job) == "complete":
                return "done"  # finished by another process between our look and our lock
            log_event(results, job.run_id, "start")
            try:
                train_job(Context(job.cfg, job.settings.protocol), job)
            except BaseException as e:  # KeyboardInterrupt: Ctrl-C, or SIGTERM (tl.study.locks.interruptible)
                event = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
                log_event(results, job.run_id, event, error=f"{type(e).__name__}: {e}")
                raise
            log_event(results, job.run_id, "done")
            return "done"
    except RunBusy:
        return "busy"


def _to_json(job: Job) -> str:
    return json.dumps(asdict(replace(job, settings=replace(job.settings, progress=False))))


def _from_json(cls, values: dict):
    """A dataclass from asdict() via JSON (lists back to tuples)."""
    return cls(**{f.name: tuple(values[f.name]) if isinstance(values[f.name], list) else values[f.name]
                  for f in fields(cls) if f.name in values})


def child_main(spec: str) -> int:
    """A worker subprocess's entry point: one job from `_to_json`; exit 0 done, 3 busy, 1 failed,
    130 interrupted."""
    d = json.loads(spec)
    try:
        with interruptible():
            job = _from_json(Job, {**d, "cfg": _from_json(RunConfig, d["cfg"]),
                                   "settings": _from_json(TrainSettings, d["settings"])})
            status = execute_locked(job)
    except KeyboardInterrupt as e:
        print(f"error: {str(e) or 'interrupted'}", file=sys.stderr, flush=True)
        return 130
    except Exception as e:  # the parent reports it from the log; the grid goes on
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    return 3 if status == "busy" else 0


def _spawn(job: Job, results: Path) -> tuple[subprocess.Popen, Path]:
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    log = results / job.run_id / "grid-worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", "import sys; from tl.study.run import child_main; "
                                 "sys.exit(child_main(sys.argv[1]))", _to_json(job)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    return proc, log


def _last_error(log: Path) -> str:
    try:
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    errors = [x for x in lines if x.startswith("error:")]
    return (errors or lines or ["no output"])[-1].removeprefix("error: ")[:300]


class _Execution:
    """The state of one `execute`: jobs pending, running (run id -> (Popen, log)), and their outcomes."""

    def __init__(self, jobs: list[Job], own: list[Job], results: Path, workers: int, progress: bool):
        self.by_id, self.results, self.workers = {j.run_id: j for j in jobs}, results, workers
        self.pending = [j.run_id for j in own]
        self.owned = set(self.pending)
        self.failed, self.skipped, self.ran, self.complete = {}, {}, [], []
        self.running: dict = {}
        self.waiting_said: set = set()
        self.bar = tqdm(total=len(self.pending), desc="grid", unit="run", disable=None if progress else True,
                        dynamic_ncols=True)

    def status(self, rid: str) -> str:
        return run_status(self.results, self.by_id[rid])

    def finish(self, rid: str, outcome: str, reason: str = "") -> None:
        if outcome in ("failed", "skipped"):
            (self.failed if outcome == "failed" else self.skipped)[rid] = reason
            self.bar.write(f"{outcome}: {rid}: {reason}")
        else:
            self.complete.append(rid)
            if outcome == "ran":
                self.ran.append(rid)
        if rid in self.owned:
            self.bar.update(1)
        self.bar.set_postfix(failed=len(self.failed) + len(self.skipped), refresh=False)

    def after_run(self, rid: str, error: str = "") -> None:
        if not error and self.status(rid) != "complete":
            error = "finished without a complete record"
        self.finish(rid, "failed", error) if error else self.finish(rid, "ran")

    def reap(self) -> None:
        """Collect finished workers; a worker that found its job locked (exit 3) puts it back to wait."""
        for rid, (proc, log) in list(self.running.items()):
            if proc.poll() is None:
                continue
            del self.running[rid]
            if proc.returncode == 3:
                self.pending.insert(0, rid)
            else:
                self.after_run(rid, "" if proc.returncode == 0 else f"{_last_error(log)} (log: {log})")

    def ready(self, rid: str) -> bool | None:
        """True: start it now; False: not yet (a dependency or another process is at work); None: the
        plan changed (it finished, was skipped, or a dependency was queued before it)."""
        job = self.by_id[rid]
        if self.status(rid) == "complete":
            self.pending.remove(rid)
            self.finish(rid, "complete")
            return None
        broken = [d for d in job.needs if d in self.failed or d in self.skipped]
        if broken:
            self.pending.remove(rid)
            self.finish(rid, "skipped", f"its dependency {broken[0]} failed")
            return None
        missing = [d for d in job.needs if self.status(d) != "complete"]
        queued = False
        for d in missing:  # run a missing dependency here unless someone holds it
            if d not in self.pending and d not in self.running and live_lock(lock_path(self.results, d)) is None:
                self.pending.insert(self.pending.index(rid), d)
                self.bar.total += d not in self.owned
                queued = True
        if missing:
            return None if queued else False
        owner = live_lock(lock_path(self.results, rid))
        if owner is not None and rid not in self.waiting_said:
            self.waiting_said.add(rid)
            self.bar.write(f"waiting: {rid} is held by pid {owner.get('pid')} on {owner.get('host')}")
        return owner is None

    def start(self, rid: str) -> bool:
        """Start the job (a worker, or here when workers == 1); True when statuses changed so the
        plan must be walked again from the top."""
        self.pending.remove(rid)
        job = self.by_id[rid]
        if self.workers > 1:
            self.running[rid] = _spawn(job, self.results)
            return False
        try:
            outcome = execute_locked(job)
        except Exception as e:
            self.after_run(rid, f"{type(e).__name__}: {e}")
        else:
            self.pending.insert(0, rid) if outcome == "busy" else self.after_run(rid)
        return True

    def step(self) -> bool:
        """One walk over the pending jobs; True when something started or changed."""
        self.reap()
        changed = False
        for rid in list(self.pending):
            if len(self.running) >= self.workers:
                break
            go = self.ready(rid)
            changed |= go is None or bool(go)
            if go and self.start(rid):
                break
        return changed


def execute(jobs: list[Job], own: list[Job], results: Path, workers: int = 1, poll: float = 30.0,
            progress: bool = True) -> dict:
    """Run `own` (a plan or a shard of it) to completion: {"complete": [...], "ran": [...], "failed":
    {id: reason}, "skipped": {id: reason}}."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    ex = _Execution(jobs, own, results, workers, progress)
    try:
        while ex.pending or ex.running:
            if not ex.step() and (ex.pending or ex.running):
                time.sleep(min(poll, 0.5) if ex.running else poll)
    except KeyboardInterrupt:
        for proc, _ in ex.running.values():
            proc.terminate()  # each worker releases its lock on the way out
        for proc, _ in ex.running.values():
            proc.wait()
        raise
    finally:
        ex.bar.close()
    return {"complete": ex.complete, "ran": ex.ran, "failed": ex.failed, "skipped": ex.skipped}
