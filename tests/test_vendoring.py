"""Copy-alone test (issue 14): tl/model.py, tl/sampling.py, tl/stats.py, and tl/heads.py beside tl/model.py,
each copied into an empty folder outside the repository and imported in a Python that cannot import
tl (isolated mode, no site hooks: the editable install's finder never runs; only the folder and
site-packages are on sys.path). Each copy must work alone and agree with the installed tl."""
import json
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps

import tl

TL_DIR = Path(tl.__file__).resolve().parent
PRELUDE = """
import importlib.util, json, sys
sys.path[:0] = [{folder!r}]
sys.path += {site!r}
assert importlib.util.find_spec("tl") is None, "tl is importable: the copy is not tested alone"
"""


def run_copied(files: list, code: str, tmp_path: Path) -> dict:
    """Copy `files` (names in tl/) into a fresh folder, run `code` there in isolation; its last stdout
    line is JSON, returned."""
    folder = tmp_path / "vendored"
    folder.mkdir()
    for name in files:
        shutil.copy(TL_DIR / name, folder / name)
    assert not str(folder).startswith(str(TL_DIR.parent))  # outside the repository
    script = PRELUDE.format(folder=str(folder), site=site.getsitepackages()) + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script], cwd=folder, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"copied {files} failed alone:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_isolation_hides_tl(tmp_path):
    """The harness itself: tl is importable here, not inside the isolated subprocess."""
    out = run_copied([], 'print(json.dumps({"path": sys.path}))', tmp_path)
    assert not any(Path(p).resolve() == TL_DIR.parent for p in out["path"] if p)


def minilm_batch(minilm_path: Path) -> dict:
    from tl.tokenizer import Tokenizer
    tok = Tokenizer.from_checkpoint(minilm_path)
    rows = tok.encode_batch(["A man is playing a guitar.", "Fine.", "The cat sat on the mat today"],
                            ["Someone plays music.", "It is not fine at all, said the other man.", "Yes."])
    T = max(len(ids) for ids, _ in rows)
    ids = [ids + [tok.pad_id] * (T - len(ids)) for ids, _ in rows]
    types = [t + [0] * (T - len(t)) for _, t in rows]
    mask = [[1] * len(r) + [0] * (T - len(r)) for r, _ in rows]
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def test_model_alone_loads_minilm_and_matches_tl(minilm_path, tmp_path):
    from tl.model import Encoder
    batch = minilm_batch(minilm_path)
    out = run_copied(["model.py"], f"""
        import torch
        from model import Encoder
        b = {{k: torch.tensor(v) for k, v in {batch!r}.items()}}
        enc = Encoder.from_pretrained({str(minilm_path)!r}).eval()
        with torch.no_grad():
            hidden = enc(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        print(json.dumps({{"hidden": hidden.tolist()}}))
    """, tmp_path)
    b = {k: torch.tensor(v) for k, v in batch.items()}
    with torch.no_grad():
        ours = Encoder.from_pretrained(minilm_path).eval()(b["input_ids"], b["attention_mask"], b["token_type_ids"])
    torch.testing.assert_close(torch.tensor(out["hidden"]), ours, rtol=0, atol=1e-6)
    assert ours.abs().sum() > 0


def test_sampling_alone_builds_an_epoch(tmp_path):
    from tl.sampling import MultiTaskSampler
    sizes = {"RTE": 10, "MNLI": 23, "STS-B": 6}
    out = run_copied(["sampling.py"], f"""
        from sampling import MultiTaskSampler
        batches = MultiTaskSampler({sizes!r}, batch_size=4, seed=3).epoch_batches(0)
        print(json.dumps([[t.tolist(), e.tolist()] for t, e in batches]))
    """, tmp_path)
    ours = MultiTaskSampler(sizes, batch_size=4, seed=3).epoch_batches(0)
    assert out == [[t.tolist(), e.tolist()] for t, e in ours]
    rows = [(t, e) for tids, eids in out for t, e in zip(tids, eids)]
    assert len(rows) > 0 and all(0 <= e < list(sizes.values())[t] for t, e in rows)


def test_stats_alone_runs_scipys_t_test(tmp_path):
    a, b = [71.2, 69.8, 70.5, 72.0, 70.1], [68.0, 69.1, 67.5, 68.8]
    out = run_copied(["stats.py"], f"""
        from stats import t_test
        r = t_test({a!r}, {b!r})
        print(json.dumps({{"t": r.t, "p": r.p}}))
    """, tmp_path)
    ref = sps.ttest_ind(a, b)
    assert out["t"] == pytest.approx(ref.statistic, rel=1e-12) and out["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert out["p"] < 0.05


def test_heads_beside_model_alone_computes_losses(minilm_path, tmp_path):
    from tl.heads import HeadSpec, MultiTaskModel
    from tl.model import Encoder
    batch = minilm_batch(minilm_path) | {"task_ids": [0, 2, 1], "labels": [1.0, 3.5, 2.0]}
    out = run_copied(["model.py", "heads.py"], f"""
        import torch
        from model import Encoder
        from heads import HeadSpec, MultiTaskModel
        b = {{k: torch.tensor(v) for k, v in {batch!r}.items()}}
        specs = [HeadSpec("RTE", 2), HeadSpec("MNLI", 3), HeadSpec("STS-B", 1, regression=True)]
        encoder = Encoder.from_pretrained({str(minilm_path)!r})
        torch.manual_seed(0)
        model = MultiTaskModel(encoder, specs, share="label_count").eval()
        with torch.no_grad():
            losses = model.losses(b)
        print(json.dumps({{"losses": losses.tolist(), "heads": sorted(model.heads)}}))
    """, tmp_path)
    b = {k: torch.tensor(v) for k, v in batch.items()}
    specs = [HeadSpec("RTE", 2), HeadSpec("MNLI", 3), HeadSpec("STS-B", 1, regression=True)]
    encoder = Encoder.from_pretrained(minilm_path)
    torch.manual_seed(0)
    model = MultiTaskModel(encoder, specs, share="label_count").eval()
    with torch.no_grad():
        ours = model.losses(b)
    assert out["heads"] == ["classifier", "mclassifier", "regression"]
    torch.testing.assert_close(torch.tensor(out["losses"]), ours, rtol=0, atol=1e-5)
    assert np.isfinite(out["losses"]).all() and min(out["losses"]) > 0
