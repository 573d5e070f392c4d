"""Fine-tune with the paper's methods: single-task, STILTs, pairwise MTL, MTL over all tasks.

    python tools/train.py --mode single  --tasks rte
    python tools/train.py --mode stilts  --tasks rte,mnli        # target first, then the support
    python tools/train.py --mode mtl     --tasks rte,mnli --sampler dynamic
    python tools/train.py --mode mtl_all --sampler size
    torchrun --nproc_per_node 2 tools/train.py --mode mtl --tasks rte,mrpc ...   # one GPU per process (NCCL)
    torchrun --nproc_per_node 2 tools/train.py --mode mtl --tasks rte,mrpc --device cpu ...   # on CPUs (gloo)

Defaults are the paper's settings (distilroberta-base, batch 128, lr 2e-5, 10 epochs, dev every
half epoch, the five seeds). Each run writes <results-dir>/<run_id>/record.json; running the same
command again skips complete runs and resumes interrupted ones. Ctrl-C or SIGTERM stops a run with
"interrupted at step N" (exit 130); a second process on a run that one is training is refused, naming
it (exit 2); every failure is one line naming the file (docs/RELIABILITY.md).

--protocol tl|authors (docs/PROTOCOL.md): whose rules for epochs, loss, heads and text. `tl` (default)
is the fair comparison: a pairwise MTL epoch is one pass over the target, every example weighs the
same, one head per task. `authors` reproduces orionw/MTLvsIFT: quota-based epochs, per-task mean
losses, heads shared by label count (carried by STILTs), lowercased text, each unordered pair trained
once and read for both tasks; its run ids start with `authors__`.
--sampler auto: `dynamic` under tl; under authors `uniform` for pairs and `size` for mtl_all, and
`dynamic` means their softmax variant (run and stored as `dynamic-softmax`).
Runs are built on single runs over --support-seeds (default the paper's five, whatever --seeds):
STILTs continues from the best of its support's, dynamic sampling's references are their mean. They
are listed before training and trained first when missing.
"""
import argparse
import os
import shlex
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path[:0] = [str(TOOLS.parent), str(TOOLS)]  # tl, and tools/allocator.py also when loaded as a module

import torch  # noqa: E402
from allocator import keep_freed_memory  # noqa: E402
from flags import ArgumentParser, add_arguments, from_namespace  # noqa: E402
from tl.hub import resolve_model  # noqa: E402
from tl.model import EncoderConfig  # noqa: E402
from tl.recipes import RunConfig  # noqa: E402
from tl.runs import resolve_dir  # noqa: E402
from tl.study.jobs import read_reference_scores, run  # noqa: E402
from tl.study.locks import RunBusy, hold_run, interruptible  # noqa: E402
from tl.train import TrainSettings  # noqa: E402


def parse(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, RunConfig, "what to run")
    add_arguments(parser, TrainSettings, "training")
    parser.add_argument("--export-hf", default="", metavar="DIR", help=EXPORT_HELP)
    args = parser.parse_args(argv)
    try:
        cfg = from_namespace(RunConfig, args)
        settings = from_namespace(TrainSettings, args)  # both __post_init__s check the flags
        if cfg.mode == "mtl_all" and len(cfg.task_names) < 2:
            raise ValueError("--mode mtl_all needs at least two tasks (default: all nine)")
        check_export(args.export_hf, cfg)
        check_inputs(cfg)  # reference scores, --max-len against the model: before any run folder is made
    except (ValueError, KeyError, OSError) as e:
        parser.exit(2, f"error: {e.args[0] if isinstance(e, KeyError) else e}\n")  # a KeyError's str() is quoted
    return cfg, settings


def check_inputs(cfg: RunConfig) -> None:
    """Check, before any run folder is made, the flags that need a file read."""
    if cfg.reference_scores:
        read_reference_scores(cfg.reference_scores, cfg.task_names)
    positions = EncoderConfig.from_checkpoint(resolve_model(cfg.model)).positions
    if cfg.max_len > positions:
        raise ValueError(f"--max-len {cfg.max_len} exceeds the {positions} positions of --model {cfg.model}")


def choose_device(flag: str, env, cuda_count: int) -> tuple:
    """The run's device and, under torchrun (LOCAL_RANK, WORLD_SIZE > 1 in `env`), its process group's
    backend: gloo on CPUs, NCCL with one GPU per process (cuda:LOCAL_RANK). `flag`: --device ('': cuda
    when one of the `cuda_count` GPUs is visible). Returns (device, backend or None); ValueError, one
    line, for what cannot run here: checked before the process group, so no rank waits on another."""
    distributed = "LOCAL_RANK" in env and int(env.get("WORLD_SIZE", "1")) > 1
    kind, colon, index = (flag or ("cuda" if cuda_count else "cpu")).partition(":")
    if kind not in ("cpu", "cuda") or (colon and (kind == "cpu" or not index.isdigit())):
        raise ValueError(f"--device {flag}: expected cpu, cuda or cuda:N")
    if kind == "cpu":
        return "cpu", "gloo" if distributed else None
    if cuda_count == 0:
        raise ValueError(f"--device {flag}: no CUDA device is visible here; use --device cpu")
    if colon and int(index) >= cuda_count:
        raise ValueError(f"--device {flag}: {cuda_count} CUDA device(s) visible here, cuda:0 to cuda:{cuda_count - 1}")
    if not distributed:
        return flag or "cuda", None
    if colon:
        raise ValueError(f"--device {flag}: under torchrun each process takes its own GPU (cuda:LOCAL_RANK); "
                         f"use --device cuda")
    local = int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))  # torchrun's processes on this machine
    if local > cuda_count:
        raise ValueError(f"torchrun started {local} processes here but {cuda_count} GPU(s) are visible: use "
                         f"--nproc_per_node {cuda_count}, or --device cpu to train on CPUs")
    return f"cuda:{env['LOCAL_RANK']}", "nccl"


EXPORT_HELP = ("after the run, write its best model with the target's head (the first of --tasks) as a Hugging "
               "Face *ForSequenceClassification folder DIR (tools/export_hf.py); the run is the one the other "
               "flags name, so give one --seeds; a finished run is not trained again")


def check_export(folder: str, cfg: RunConfig) -> None:
    """--export-hf names one run that keeps a best/ model: one seed, not mtl_all (whose records share no best/)."""
    if folder and len(cfg.seeds) != 1:
        raise ValueError(f"--export-hf exports one run: give one --seeds (got {','.join(map(str, cfg.seeds))})")
    if folder and cfg.mode == "mtl_all":
        raise ValueError("--export-hf: an mtl_all run keeps no best/ model (each task has its own best step)")


def export_flag(argv: list) -> str:
    """--export-hf's value (parse() declares and checks it)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--export-hf", default="")
    return parser.parse_known_args(argv)[0].export_hf


def finish(records: list, cfg: RunConfig, export: str) -> None:
    """The asked runs' dev scores beside their dev sets' majority class, where they are, the command that
    analyses them, and the --export-hf folder."""
    results = Path(cfg.results_dir)
    for r in records:
        majority = r.get("majority", {})  # records of older versions have none
        print(f"{r['run_id']}: " + ", ".join(
            f"{t} dev {r['best'][t]['score']:.2f}" + (f" (majority class {majority[t]:.2f})" if t in majority else "")
            for t in [r["target"], *(r["supports"] if r["mode"] == "mtl" else [])]))
    folders = sorted({r.get("train_run", r["run_id"]) for r in records})
    print(f"run folder{'s' if len(folders) > 1 else ''}: " + ", ".join(str(results / f) for f in folders))
    print(f"analyse: python tools/stats.py --results {shlex.quote(str(results))} "
          f"--out {shlex.quote(str(results / 'stats'))}", flush=True)
    if export:
        from export_hf import export as export_hf  # tools/export_hf.py

        best = resolve_dir(results / records[0].get("train_run", records[0]["run_id"]) / "best")
        if best is None:
            raise FileNotFoundError(f"--export-hf: {records[0]['run_id']} has no best/ model")
        print(f"exported {records[0]['target']}: {export_hf(best, export, records[0]['target'])}", flush=True)


def main(argv=None) -> int:
    cfg, settings = parse(argv)
    try:
        cfg.device, backend = choose_device(cfg.device, os.environ,
                                            torch.cuda.device_count() if torch.cuda.is_available() else 0)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    distributed = backend is not None
    if distributed:
        import torch.distributed as dist

        if backend == "nccl":
            torch.cuda.set_device(torch.device(cfg.device))
        dist.init_process_group(backend)
        if dist.get_rank() != 0:  # rank 0 prints for all; the others' lines would be duplicates
            sys.stdout = open(os.devnull, "w")
    keep_freed_memory()  # reuse freed host memory: no page faults for each step's large buffers
    status = 0
    try:
        with interruptible(not distributed):  # SIGTERM (a Slurm time limit) as Ctrl-C; torchrun stops DDP ranks
            records = run(cfg, settings, hold=hold_run)  # checks first that --results-dir can be written
        if int(os.environ.get("RANK", "0")) == 0:
            finish(records, cfg, export_flag(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt as e:  # the run's lock released, temporaries removed (tl.study.locks.hold_run)
        print(f"{str(e) or 'interrupted'}; run the same command to resume", file=sys.stderr, flush=True)
        status = 130
    except (ValueError, OSError, RunBusy, FloatingPointError) as e:  # OSError: disk full, read-only, a file missing
        print(f"error: {e}", file=sys.stderr, flush=True)
        status = 2
    if distributed:
        # Leave without the interpreter's shutdown, which under gloo sometimes aborts ("terminate
        # called without an active exception"). On success the ranks meet at a barrier first; after an
        # error they do not (another rank may be inside a collective), and torchrun stops the others.
        import torch.distributed as dist

        if status == 0:
            dist.barrier()
            dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
