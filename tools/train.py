"""Fine-tune with the paper's methods: single-task, STILTs, pairwise MTL, MTL over all tasks.

    python tools/train.py --mode single  --tasks rte
    python tools/train.py --mode stilts  --tasks rte,mnli        # target first, then the support
    python tools/train.py --mode mtl     --tasks rte,mnli --sampler dynamic
    python tools/train.py --mode mtl_all --sampler size
    torchrun --nproc_per_node 2 tools/train.py --mode mtl --tasks rte,mrpc ...

Defaults are the paper's settings (distilroberta-base, batch 128, lr 2e-5, 10 epochs, dev every
half epoch, the five seeds). Each run writes <results-dir>/<run_id>/record.json; running the same
command again skips complete runs and resumes interrupted ones.

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
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path[:0] = [str(TOOLS.parent), str(TOOLS)]  # tl, and tools/allocator.py also when loaded as a module

from allocator import keep_freed_memory  # noqa: E402
from tl.cli import ArgumentParser, add_arguments, from_namespace  # noqa: E402
from tl.recipes import RunConfig, run  # noqa: E402
from tl.train import TrainSettings  # noqa: E402


def parse(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, RunConfig, "what to run")
    add_arguments(parser, TrainSettings, "training")
    args = parser.parse_args(argv)
    try:
        cfg = from_namespace(RunConfig, args)
        settings = from_namespace(TrainSettings, args)  # both __post_init__s check the flags
        if cfg.mode == "mtl_all" and len(cfg.task_names) < 2:
            raise ValueError("--mode mtl_all needs at least two tasks (default: all nine)")
    except (ValueError, KeyError) as e:
        parser.exit(2, f"error: {str(e).strip(chr(34) + chr(39))}\n")
    return cfg, settings


def main(argv=None) -> int:
    cfg, settings = parse(argv)
    distributed = "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        import torch
        import torch.distributed as dist

        backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
            cfg.device = f"cuda:{os.environ['LOCAL_RANK']}"
        dist.init_process_group(backend)
        if dist.get_rank() != 0:  # rank 0 prints for all; the others' lines would be duplicates
            sys.stdout = open(os.devnull, "w")
    keep_freed_memory()  # reuse freed host memory: no page faults for each step's large buffers
    status = 0
    try:
        run(cfg, settings)  # checks first that --results-dir can be written
    except (ValueError, FileNotFoundError, PermissionError, FloatingPointError) as e:
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
