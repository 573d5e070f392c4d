"""tl.hub: local folders, installed model packages, and downloads from a local HTTP server on 127.0.0.1
that stands in for the Hugging Face hub (including a cut-off transfer and an unreachable server). Retries
wait no time here (tl.hub.BACKOFF_S = 0)."""
import functools
import http.server
import shutil
import socket
import threading

import pytest
import torch

from oracle import tiny_config
import tl.hub
from tl.hub import model_cache, resolve_model
from tl.model import Encoder, EncoderConfig


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class CutOffHandler(QuietHandler):
    """Announces the full Content-Length, then sends half the body and hangs up."""

    def do_GET(self):
        path = self.translate_path(self.path)
        try:
            body = open(path, "rb").read()
        except OSError:
            return self.send_error(404)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.close_connection = True


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(tl.hub, "BACKOFF_S", 0.0)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """Start a server over tmp_path/hub laid out as {repo}/resolve/main/{file}; yields a function
    (handler class) -> hub folder, with $TL_HUB_URL pointing at the server."""
    servers = []

    def start(handler=QuietHandler):
        root = tmp_path / "hub"
        root.mkdir(exist_ok=True)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        monkeypatch.setenv("TL_HUB_URL", f"http://127.0.0.1:{server.server_address[1]}")
        return root

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def publish(root, repo, tokenizer_source, weights="safetensors"):
    """Put a tiny BERT and a tokenizer file under root/{repo}/resolve/main/."""
    folder = root / repo / "resolve" / "main"
    torch.manual_seed(0)
    encoder = Encoder(EncoderConfig.from_dict(tiny_config("bert")))
    encoder.save_pretrained(folder)
    if weights == "bin":
        torch.save(encoder.checkpoint_state(), folder / "pytorch_model.bin")  # transformers' names
        (folder / "model.safetensors").unlink()
    shutil.copy(tokenizer_source, folder)
    return folder


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_folder_and_package(minilm_path, tmp_path):
    assert resolve_model(minilm_path) == minilm_path
    assert resolve_model("all-MiniLM-L6-v2") == minilm_path
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == minilm_path
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        resolve_model("./not/a/folder")


def test_download_then_reuse_cache(hub, minilm_path, tmp_path, monkeypatch):
    published = publish(hub(), "org/tiny-bert", minilm_path / "tokenizer.json")
    folder = resolve_model("org/tiny-bert", cache_dir=tmp_path / "cache")
    assert folder == tmp_path / "cache" / "org--tiny-bert"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (folder / name).read_bytes() == (published / name).read_bytes()
    assert not list(folder.glob("*.part")) and not (folder / "pytorch_model.bin").exists()
    Encoder.from_pretrained(folder)
    # a second call needs no network: the cache is complete
    monkeypatch.setenv("TL_HUB_URL", f"http://127.0.0.1:{closed_port()}")
    assert resolve_model("org/tiny-bert", cache_dir=tmp_path / "cache") == folder


def test_download_falls_back_to_bin_and_vocab_txt(hub, minilm_path, tmp_path):
    publish(hub(), "tiny", minilm_path / "vocab.txt", weights="bin")
    folder = resolve_model("tiny", cache_dir=tmp_path / "cache")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "pytorch_model.bin", "vocab.txt"]
    assert Encoder.from_pretrained(folder).config.hidden_size == 32


def test_default_cache_under_tl_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TL_CACHE", str(tmp_path))
    assert model_cache("FacebookAI/roberta-base") == tmp_path / "models" / "FacebookAI--roberta-base"


def test_unreachable_hub_names_cache_folder_and_files(monkeypatch, tmp_path):
    monkeypatch.setenv("TL_HUB_URL", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(FileNotFoundError) as e:
        resolve_model("roberta-base", cache_dir=tmp_path)
    message = str(e.value)
    assert "\n" not in message
    for fragment in (str(tmp_path / "roberta-base"), "config.json", "model.safetensors", "tokenizer.json"):
        assert fragment in message


def test_cut_off_download_leaves_no_partial_file(hub, minilm_path, tmp_path):
    """Every try is cut off: the cache holds only `.part` files (nothing under a real name, so the folder
    still reads as incomplete); a later call against a working server completes it."""
    publish(hub(CutOffHandler), "tiny", minilm_path / "tokenizer.json")
    with pytest.raises(FileNotFoundError) as e:
        resolve_model("tiny", cache_dir=tmp_path / "cache")
    assert "\n" not in str(e.value) and "cannot download" in str(e.value) and "3 attempt(s)" in str(e.value)
    assert [p.name for p in (tmp_path / "cache" / "tiny").iterdir()] == ["config.json.part"]
    hub()
    folder = resolve_model("tiny", cache_dir=tmp_path / "cache")
    assert Encoder.from_pretrained(folder).config.hidden_size == 32 and not list(folder.glob("*.part"))


def test_unknown_repo(hub, tmp_path):
    hub()
    with pytest.raises(FileNotFoundError) as e:
        resolve_model("org/nothing-here", cache_dir=tmp_path)
    assert "has no config.json" in str(e.value) and "\n" not in str(e.value)
