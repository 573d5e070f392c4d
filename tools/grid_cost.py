"""The cost of a grid's plan for `tools/grid.py --dry-run` (docs/GRID.md "Status, cost and the dry
run"): training examples and tokens per run from the sampler's first-epoch weights and fit()'s step
count, hours at a measured throughput (`tools/bench.py train --json FILE`), one line per run.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from tl import hub
from tl.recipes import Job, RunConfig, train_sizes
from tl.sampling import authors_quotas, task_weights
from tl.study.locks import live_lock, lock_path
from tl.study.plan import GridConfig, count_rows, parse_shard, run_status
from tl.tasks import get_task, read_split
from tl.tokenizer import Tokenizer
from tl.train import TrainSettings

# mean tokens per training example (WordPiece, [CLS]/[SEP] included, max 128), docs/PROTOCOL.md's
# figures for the full GLUE training sets; used when the train file or the model's tokenizer is not at hand
MEAN_TOKENS = {"CoLA": 11, "SST-2": 13, "STS-B": 28, "QQP": 31, "WNLI": 37, "MNLI": 39, "QNLI": 49, "MRPC": 53,
               "RTE": 67}
# official GLUE dev sizes (MNLI: matched + mismatched), when the dev files are not at hand
DEV_SIZES = {"MNLI": 9815 + 9832, "QQP": 40430, "QNLI": 5463, "SST-2": 872, "CoLA": 1043, "STS-B": 1500,
             "MRPC": 408, "RTE": 277, "WNLI": 71}
EVAL_COST = 1 / 3  # a forward pass costs about a third of a training step (forward + backward = 3 x forward)


@dataclass
class Throughput:
    """Useful (non-pad) training tokens per second, per task; `default` for tasks not measured."""

    per_task: dict = field(default_factory=dict)
    default: float = 0.0
    source: str = ""


def read_throughput(text: str) -> Throughput | None:
    """`--throughput`: useful tokens/s for every task, or the JSON of `tools/bench.py train --json FILE`
    (tasks the file lacks get the mean of those it has)."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None:
        if not value > 0:
            raise ValueError(f"--throughput {text}: useful tokens per second must be positive")
        return Throughput({}, value, f"{value:g} useful tokens/s (given)")
    path = Path(text)
    expected = '{"model": ..., "device": ..., "tasks": {"RTE": {"tl": {"useful_tokens_per_second": x}}, ...}}'
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--throughput {path}: no such file (write it with `python tools/bench.py train "
                                f"--json {path}`, or give useful tokens/s as a number)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--throughput {path}: not readable JSON ({e}); expected {expected}") from None
    try:
        per_task = {get_task(t).name: float(v["tl"]["useful_tokens_per_second"]) for t, v in data["tasks"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"--throughput {path}: missing or bad field ({e}); expected {expected}") from None
    if not per_task or not all(v > 0 for v in per_task.values()):
        raise ValueError(f"--throughput {path}: no positive useful_tokens_per_second; expected {expected}")
    default = sum(per_task.values()) / len(per_task)
    device = data.get("machine") or data.get("device", "?")
    return Throughput(per_task, default, f"{path} (model {data.get('model', '?')}, device {device})")


def _local_model(name: str) -> Path | None:
    """The model folder if it is on this machine (a folder, an installed package, a cached hub
    download); None rather than download it for an estimate."""
    try:
        if Path(name).expanduser().is_dir() or name.lower() in hub.PACKAGES:
            return hub.resolve_model(name)
        folder = hub.model_cache(hub.HUB_ALIASES.get(name.lower(), name))
        return folder if folder.is_dir() and not hub.missing(folder) else None
    except (OSError, ValueError):
        return None


def mean_tokens(tasks, data_dir, model: str, max_len: int, sample: int = 2000) -> tuple[dict, str]:
    """Mean tokens per training example per task, and how they were found: the model's tokenizer on up to
    `sample` evenly spaced train examples, else MEAN_TOKENS (max_len/2 for a task it lacks)."""
    folder, tok = _local_model(model), None
    if folder is not None:
        tok = Tokenizer.from_checkpoint(folder)
    out, how = {}, set()
    for t in tasks:
        spec = get_task(t)
        try:
            if tok is None:
                raise FileNotFoundError
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ex = read_split(spec, data_dir, "train")
            pick = range(0, len(ex), max(1, len(ex) // sample))
            encoded = tok.encode_batch([ex.text_a[i] for i in pick],
                                       None if ex.text_b is None else [ex.text_b[i] for i in pick], max_len)
            out[spec.name] = sum(len(ids) for ids, _ in encoded) / len(encoded)
            how.add("measured on the train files")
        except (FileNotFoundError, ValueError):
            out[spec.name] = min(MEAN_TOKENS.get(spec.name, max_len / 2), max_len)
            how.add("docs/PROTOCOL.md's table")
    return out, " and ".join(sorted(how))


def dev_counts(tasks, data_dir) -> dict:
    """Dev examples evaluated per task (every dev split), counted in the files, else DEV_SIZES."""
    counts = {spec.name: count_rows(spec, data_dir, spec.eval_splits) for spec in map(get_task, tasks)}
    return {t: DEV_SIZES.get(t, 1000) if n is None else n for t, n in counts.items()}


def epoch_rows(job: Job, sizes: dict) -> dict[str, float]:
    """Training rows per task in one epoch at the first epoch's sampler weights (docs/GRID.md "Status,
    cost and the dry run")."""
    trained = [job.target] if job.mode in ("single", "stilts") else [job.target, *job.supports]  # STILTs'
    n = {t: sizes[t] for t in trained}  # supports are their own jobs
    if len(n) == 1:
        return n
    st = job.settings
    w = task_weights("size" if st.sampler.startswith("dynamic") else st.sampler, n, temperature=st.temperature)
    if st.protocol == "authors":
        quotas = dict(zip(n, authors_quotas(list(w.values()), st.batch_size, uniform=st.sampler == "uniform")))
        groups = min(n[t] // q for t, q in quotas.items() if q > 0)
        return {t: float(q * groups) for t, q in quotas.items()}
    total = n[job.target] / w[job.target] if job.mode == "mtl" else sum(n.values())
    return {t: total * w[t] for t in n}


def run_cost(job: Job, train_size, dev: dict) -> tuple[dict, dict]:
    """(training examples, dev examples evaluated) per task, following fit()'s step count."""
    rows = epoch_rows(job, train_sizes(job.cfg, train_size, job.target, list(job.supports)))
    total, st = sum(rows.values()), job.settings
    per_epoch = math.ceil(total / st.batch_size)
    steps = math.ceil(st.epochs * per_epoch) if st.epochs > 0 else st.max_steps
    if st.max_steps > 0:
        steps = min(steps, st.max_steps)
    examples = min(steps * st.batch_size, math.ceil(st.epochs * total) if st.epochs > 0 else steps * st.batch_size)
    evals = max(1, steps * st.evals_per_epoch // per_epoch)
    return {t: examples * r / total for t, r in rows.items()}, {t: evals * dev[t] for t in rows}


def estimate(jobs: list[Job], train_size, tokens: dict, dev: dict, throughput: Throughput | None) -> list[dict]:
    """Per job: training examples, tokens (training + EVAL_COST x dev) and hours (None without a throughput)."""
    out = []
    for job in jobs:
        train, evaluated = run_cost(job, train_size, dev)
        work = {t: (train[t] + EVAL_COST * evaluated[t]) * tokens[t] for t in train}
        hours = None
        if throughput is not None:
            hours = sum(w / throughput.per_task.get(t, throughput.default) for t, w in work.items()) / 3600
        out.append({"examples": sum(train.values()), "tokens": sum(work.values()), "hours": hours})
    return out


def dry_run(grid: GridConfig, base: RunConfig, settings: TrainSettings, jobs: list[Job], counts: dict) -> str:
    """`--dry-run`'s text: a header, one line per job (status, id, examples, hours, needs not complete,
    a live lock), then the totals."""
    results, throughput = Path(base.results_dir), read_throughput(grid.throughput)
    tasks = sorted({t for j in jobs for t in (j.target, *j.supports)})
    tokens, how = mean_tokens(tasks, base.data_dir, base.model, base.max_len)
    costs = estimate(jobs, lambda task: counts[get_task(task).name], tokens, dev_counts(tasks, base.data_dir),
                     throughput)
    statuses = [run_status(results, j) for j in jobs]
    done = {j.run_id for j, s in zip(jobs, statuses) if s == "complete"}
    width = max([len(j.run_id) for j in jobs] + [6])
    i, n = parse_shard(grid.shard)
    lines = [f"plan {grid.plan}, protocol {settings.protocol}" + (f", shard {i}/{n}" if n > 1 else "") +
             f": model {base.model}, seeds {','.join(map(str, base.seeds))}, results {results}; "
             f"tokens per example {how}", f"{'status':<9} {'run':<{width}} {'examples':>13} {'hours':>9}  waits for"]
    for j, s, c in zip(jobs, statuses, costs):
        waiting = [d for d in j.needs if d not in done]
        hours = "?" if c["hours"] is None else f"{c['hours']:.2f}"
        lock = live_lock(lock_path(results, j.run_id))
        note = f"  [locked by pid {lock.get('pid')} on {lock.get('host')}]" if lock else ""
        waits = f"{len(waiting)} runs" if waiting else "-"
        lines.append(f"{s:<9} {j.run_id:<{width}} {c['examples']:>13,.0f} {hours:>9}  {waits}{note}")
    count = {k: statuses.count(k) for k in ("complete", "partial", "to do")}
    records = len({rid for j in jobs for rid in j.outputs})
    left = [c for c, s in zip(costs, statuses) if s != "complete"]
    if throughput is None:
        hours = "hours: pass --throughput FILE.json (python tools/bench.py train --json FILE) or tokens/s"
    else:
        hours = (f"{sum(c['hours'] for c in costs):,.1f} hours in all, {sum(c['hours'] for c in left):,.1f} left, "
                 f"at {throughput.source}")
    lines.append(f"total: {len(jobs)} runs ({count['complete']} complete, {count['partial']} partial, "
                 f"{count['to do']} to do), {records} records; {sum(c['examples'] for c in costs):,.0f} "
                 f"training examples; {hours}")
    return "\n".join(lines)
