"""The results folder, and the only code that reads or writes it: run ids, records, logs, checkpoint
folders and atomic writes (STYLE.md principle 19; nanochat's checkpoint_manager).
A run's folder holds record.json, config.json, log.jsonl, checkpoint/, best/ and grid.lock (README.md;
docs/RELIABILITY.md). Every file is written to a temp file and renamed; under DDP only rank 0 writes.

Imports no tl file.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import torch.distributed as dist
from safetensors import SafetensorError

SCHEMA = 1
# how a run is executed, not what it computes: a run found under its id with other values is the same run
NOT_IDENTITY = {"results_dir", "cache_dir", "seeds", "device", "progress", "support_seeds", "data_dir",
                "reference_scores", "eval_batch_size", "save_every", "tasks", "mode", "keep_best", "compile",
                "keep_checkpoint"}
ONE_TASK_UNUSED = {"sampler", "schedule", "temperature"}


def run_id(mode: str, tasks: list[str], seed: int, *, sampler: str = "", schedule: str = "heterogeneous",
           protocol: str = "tl", limit_train: int = 0, target_size: int = 0, support_size: str = "") -> str:
    """The folder name of a run, target task first: `mtl__rte+mnli__dynamic__s42`,
    `authors__mtl__rte+mnli__uniform__s42`. Settings not in it are checked by `check_existing`."""
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
    return "__".join((["authors"] if protocol == "authors" else []) + parts)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, set):
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


def write_file(path: Path, data: str | bytes) -> Path:
    """Write text or bytes to `path` through a temp file and a rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def write_json(path: Path, obj) -> None:
    """Write JSON atomically; under DDP only rank 0 (two writers would race on the temp file)."""
    if _rank() == 0:
        write_file(path, json.dumps(obj, indent=1, default=_json_default))


def read_json(path: Path, fix: str = "delete it and run the same command again"):
    """The JSON in `path`; a corrupt file is a one-line error naming it and saying how to recover (`fix`)."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); {fix}") from None


def append_log(path: Path, entry: dict) -> None:
    """One line of a .jsonl log (rank 0 only)."""
    if _rank() == 0:
        with writing(path), open(path, "a") as f:
            f.write(json.dumps(entry, default=_json_default) + "\n")  # one write: lines never interleave


def write_log(path: Path, entries: list[dict]) -> None:
    """log.jsonl made of `entries` (rank 0 only): on resume, the checkpoint's history (later or torn lines go)."""
    if _rank() == 0 and (entries or Path(path).exists()):
        write_file(path, "".join(json.dumps(e, default=_json_default) + "\n" for e in entries))


def swap_dir(tmp: Path, final: Path) -> None:
    """Replace folder `final` by `tmp`; a kill between the two renames leaves `final.old` (`resolve_dir`)."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def resolve_dir(final: Path) -> Path | None:
    """`final`, or `final.old` left by a kill inside `swap_dir`; None when neither holds a model/state."""
    final = Path(final)
    for candidate in (final, final.with_name(final.name + ".old")):
        if (candidate / "state.json").exists() or (candidate / "model.safetensors").exists():
            return candidate
    return None


def fresh_dir(path: Path) -> Path:
    """An empty folder at `path` (a leftover from a killed writer is removed)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def drop_checkpoints(run_dir: Path) -> None:
    """Delete checkpoint/ (and its .tmp/.old) of a complete run: the resume state is 3x the model."""
    if _rank() == 0:
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
    """The settings that make a run what it is. The sampler's settings are not part of a one-task run's;
    the support seeds are of a run that builds on single runs (`builds_on_singles`)."""
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
    """A partial run resumes only on the data it started with: `data` ({"RTE/train.tsv": sha256}) must
    match its config.json's (content, not paths: the same files in another folder resume)."""
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
    records = []
    for path in sorted(Path(results_dir).glob("*/record.json")):
        with suppress(ValueError):  # a torn record is a run to redo, not a result
            records.append(read_json(path))
    return [r for r in records if isinstance(r, dict) and r.get("status") == "complete"]


def check_writable(results: Path) -> None:
    """Fail at once, not after hours of training, when the results folder cannot be written."""
    results = Path(results)
    if results.exists() and not results.is_dir():
        raise NotADirectoryError(f"--results-dir {results} is a file, not a folder; choose a folder")
    try:
        results.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=results).close()
    except OSError as e:
        raise PermissionError(f"--results-dir {results} is not writable ({e.strerror}); choose another "
                              f"folder") from None
