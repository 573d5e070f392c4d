"""Run the paper's experiment grid (or the dataset-size experiment) as one resumable command.

    python tools/grid.py --plan paper --dry-run --throughput bench.json   # every run, status, cost
    python tools/grid.py --plan paper --tasks rte,mrpc,stsb,cola,wnli,sst2 --workers 2
    python tools/grid.py --plan size --seeds 42,544460                   # Figure 2
    python tools/grid.py --plan paper --protocol authors --dry-run       # the authors' code's rules: 600 runs
    python tools/grid.py --plan paper --emit-slurm grid.sbatch --slurm-tasks 16 --sbatch "--gres=gpu:1"

Every run is `tools/train.py` with the same flags (the training flags below pass through), under the
same run id in --results-dir, so complete runs are skipped and partial ones resumed; the run count
of each plan is derived in docs/GRID.md. Exit status 1 when a run failed or was skipped, 130 when
stopped by Ctrl-C or SIGTERM (each worker's lock released, `interrupted` in grid-events.jsonl).
"""
import argparse
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/flags.py, grid_cost.py, train.py

from flags import ArgumentParser, add_arguments, from_namespace  # noqa: E402
from grid_cost import dry_run  # noqa: E402
from tl.recipes import RunConfig  # noqa: E402
from tl.runs import check_writable  # noqa: E402
from tl.study.locks import interruptible  # noqa: E402
from tl.study.plan import GridConfig, make_plan, parse_shard, plan_tasks, shard_runs, train_counts  # noqa: E402
from tl.study.run import execute  # noqa: E402
from tl.train import TrainSettings  # noqa: E402
from train import check_inputs  # noqa: E402


def glue_values(argv: list[str], flags) -> list[str]:
    """`--sbatch --gres=gpu:1` -> `--sbatch=--gres=gpu:1`: argparse reads a lone value that starts with
    "--" as a flag, so `--sbatch "--gres=gpu:1"` as the README writes it would be refused."""
    out = list(argv)
    for i in range(len(out) - 2, -1, -1):
        if out[i] in flags:
            out[i:i + 2] = [f"{out[i]}={out[i + 1]}"]
    return out


def parse(argv):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, GridConfig, "the grid")
    add_arguments(parser, RunConfig, "every run (as tools/train.py; --mode is chosen by the plan)")
    add_arguments(parser, TrainSettings, "training (as tools/train.py)")
    # None = not given: --mode is refused (the plan chooses). --support-seeds keeps tools/train.py's default,
    # the paper's five whatever --seeds: a STILTs or dynamic run is the same run by hand and in a grid
    parser.set_defaults(mode=None)
    args = parser.parse_args(glue_values(argv, ("--sbatch",)))
    try:
        if args.mode is not None:
            raise ValueError("--mode: the plan chooses the modes; restrict them with --methods")
        grid = from_namespace(GridConfig, args)
        base = from_namespace(RunConfig, args, mode="mtl_all")
        settings = from_namespace(TrainSettings, args)
        if base.target_size or base.support_size:
            raise ValueError("--target-size/--support-size: the size plan sets them per run; choose them with "
                             "--size-k and --target-fractions")
    except (ValueError, KeyError) as e:
        parser.exit(2, f"error: {str(e).strip(chr(34) + chr(39))}\n")
    return grid, base, settings


_NOT_PASSED_ON = {"--emit-slurm": 1, "--slurm-tasks": 1, "--sbatch": 1, "--shard": 1, "--dry-run": 0,
                  "--workers": 1}


def slurm_script(argv: list[str], n: int, results: str, sbatch: str = "", cwd: Path | None = None) -> str:
    """An sbatch array script of n tasks, each running `tools/grid.py <argv> --shard $SLURM_ARRAY_TASK_ID/n`
    from `cwd` (default: here) with this Python (argv without the Slurm, shard, dry-run and workers flags)."""
    keep, args = [], iter(argv)
    for a in args:
        flag = a.split("=", 1)[0]
        if flag not in _NOT_PASSED_ON:
            keep.append(a)
        elif "=" not in a and _NOT_PASSED_ON[flag]:
            next(args, None)  # its value
    tool = Path(__file__).resolve()
    options = "".join(f"#SBATCH {o}\n" for o in shlex.split(sbatch))
    command = shlex.join([sys.executable, str(tool), *keep])
    return (f"#!/bin/bash\n"
            f"# written by tools/grid.py --emit-slurm: submit with `sbatch <this file>`; submit it again to resume\n"
            f"#SBATCH --job-name=tl-grid\n#SBATCH --array=0-{n - 1}\n"
            f"#SBATCH --output={shlex.quote(str(Path(results).resolve() / 'slurm-%A_%a.out'))}\n{options}"
            f"set -euo pipefail\ncd {shlex.quote(str(Path(cwd or os.getcwd()).resolve()))}\n"
            f"{command} --shard \"${{SLURM_ARRAY_TASK_ID}}/{n}\"\n")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    grid, base, settings = parse(argv)
    try:
        counts = train_counts(plan_tasks(grid, base), base.data_dir)
        plan = make_plan(grid, base, settings, counts)
        results = Path(base.results_dir)
        if grid.emit_slurm:
            script = slurm_script(argv, grid.slurm_tasks, base.results_dir, grid.sbatch)
            path = Path(grid.emit_slurm)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(script)
            tmp.replace(path)
            print(f"wrote {path}: {len(plan)} runs in {grid.slurm_tasks} array tasks; submit with: sbatch {path}")
            return 0
        own = shard_runs(plan, *parse_shard(grid.shard))
        if grid.dry_run:
            print(dry_run(grid, base, settings, own, counts))
            return 0
        check_inputs(base)  # reference scores, --max-len against the model: before any run folder is made
        check_writable(results)
        with interruptible():  # SIGTERM (a Slurm time limit) as Ctrl-C: workers stopped, locks released
            out = execute(plan, own, results, workers=grid.workers, poll=grid.poll, progress=settings.progress)
    except KeyboardInterrupt:
        print("grid: interrupted; run the same command to resume", file=sys.stderr, flush=True)
        return 130
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    owned = {r.run_id for r in own}
    print(f"grid: {len(owned & set(out['complete']))} of {len(own)} runs complete ({len(out['ran'])} trained now), "
          f"{len(out['failed'])} failed, {len(out['skipped'])} skipped")
    for rid, reason in {**out["failed"], **out["skipped"]}.items():
        print(f"  {rid}: {reason}")
    return 1 if out["failed"] or out["skipped"] else 0


if __name__ == "__main__":
    sys.exit(main())
