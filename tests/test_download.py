"""tools/download_glue.py and tl.hub's `download` end to end against a local HTTP server on 127.0.0.1:
resume after a dropped connection, checksum errors leaving nothing behind, path-traversal and symlink
zip members refused, MRPC rebuilt as GLUE's script does, --from, idempotent reruns. No network is used."""
import hashlib
import http.server
import io
import stat
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from tl.hub import download
from tl.tasks import get_task, read_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import download_glue  # noqa: E402
from download_glue import GLUE_HOST, Source, build_mrpc, safe_extract_zip  # noqa: E402

RTE_TRAIN = "index\tsentence1\tsentence2\tlabel\n" + "".join(
    f"{i}\tPremise number {i}.\tHypothesis {i}.\t{'entailment' if i % 3 else 'not_entailment'}\n" for i in range(400))
RTE_DEV = "index\tsentence1\tsentence2\tlabel\n0\tA dog runs.\tAn animal runs.\tentailment\n"


def make_zip(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:  # stored: a large, resumable body
        for name, text in members.items():
            z.writestr(name, text)
    return buffer.getvalue()


class Server:
    """Serves `files` (path -> bytes) with Range support; a path in `drop_once` gets half its body and
    a closed connection on its first request. `requests` records (path, Range header)."""

    def __init__(self):
        self.files, self.drop_once, self.requests = {}, set(), []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in server.drop_once:
                    server.drop_once.discard(self.path)
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def serve(server, name: str, body: bytes, sha256=None) -> dict:
    """Publish `body` under the official path of `name`; return the sources table entry for it."""
    path = f"/glue/data/{name}"
    server.files[path] = body
    return {name: Source(GLUE_HOST + path, sha256 or hashlib.sha256(body).hexdigest(), len(body))}


def run_tool(server, tmp_path, sources, *extra) -> int:
    return download_glue.main(["--tasks", *sources, "--data-dir", str(tmp_path / "glue"), "--base-url", server.url,
                               "--quiet", *extra], sources=sources, backoff=0.0)


def leftovers(data_dir: Path) -> list:
    """Everything under data_dir (.downloads, *.tmp and .write-test-* files included)."""
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*"))


def test_download_extract_and_second_run_does_nothing(server, tmp_path, capsys):
    sources = {"RTE": serve(server, "RTE.zip", make_zip({"RTE/train.tsv": RTE_TRAIN, "RTE/dev.tsv": RTE_DEV}))}
    assert run_tool(server, tmp_path, sources) == 0
    train = read_split(get_task("rte"), tmp_path / "glue", "train")
    assert len(train) == 400 and train.text_a[7] == "Premise number 7."
    assert sorted(p.name for p in (tmp_path / "glue").rglob("*")) == ["RTE", "dev.tsv", "train.tsv"]  # no archive
    n_requests = len(server.requests)
    assert run_tool(server, tmp_path, sources) == 0
    assert len(server.requests) == n_requests
    assert "RTE: present" in capsys.readouterr().out


def test_dropped_connection_resumes_with_range(server, tmp_path):
    body = make_zip({"RTE/train.tsv": RTE_TRAIN, "RTE/dev.tsv": RTE_DEV})
    sources = {"RTE": serve(server, "RTE.zip", body)}
    server.drop_once.add("/glue/data/RTE.zip")
    assert run_tool(server, tmp_path, sources) == 0
    assert server.requests == [("/glue/data/RTE.zip", None), ("/glue/data/RTE.zip", f"bytes={len(body) // 2}-")]
    assert (tmp_path / "glue" / "RTE" / "train.tsv").read_text() == RTE_TRAIN


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    body = b"x" * 10_000 + b"y" * 10_000
    server.files["/f.bin"] = body
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(body[:12_345])
    download(server.url + "/f.bin", dest, hashlib.sha256(body).hexdigest(), backoff=0.0, progress=False)
    assert dest.read_bytes() == body
    assert server.requests == [("/f.bin", "bytes=12345-")]
    assert not (tmp_path / "f.bin.part").exists()


def test_missing_ok_returns_none_on_404_without_retrying(server, tmp_path):
    """tl.hub's use: a file the server lacks (HTTP 404) is None with missing_ok, an OSError without;
    neither retries nor leaves a file."""
    assert download(server.url + "/absent.json", tmp_path / "absent.json", missing_ok=True, progress=False) is None
    with pytest.raises(OSError, match="404"):
        download(server.url + "/absent.json", tmp_path / "absent.json", progress=False)
    assert len(server.requests) == 2 and list(tmp_path.iterdir()) == []


def test_corrupted_archive_is_a_checksum_error_and_leaves_nothing(server, tmp_path, capsys):
    good = make_zip({"RTE/train.tsv": RTE_TRAIN, "RTE/dev.tsv": RTE_DEV})
    sources = {"RTE": serve(server, "RTE.zip", good[:-100] + b"\0" * 100, sha256=hashlib.sha256(good).hexdigest())}
    assert run_tool(server, tmp_path, sources) == 2
    err = capsys.readouterr().err
    assert "checksum mismatch for http://127.0.0.1" in err and "the downloaded copy was deleted" in err
    assert err.count("\n") == 1 and leftovers(tmp_path / "glue") == []


def test_path_traversal_member_is_refused(server, tmp_path, capsys):
    evil = make_zip({"RTE/train.tsv": RTE_TRAIN, "RTE/dev.tsv": RTE_DEV, "RTE/../../evil.txt": "owned"})
    sources = {"RTE": serve(server, "RTE.zip", evil)}
    assert run_tool(server, tmp_path, sources) == 2
    assert "refusing to extract member 'RTE/../../evil.txt'" in capsys.readouterr().err
    assert leftovers(tmp_path / "glue") == []
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("member", ["/etc/evil.txt", "C:/evil.txt"])
def test_absolute_members_are_refused(tmp_path, member):
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip({"ok.txt": "fine", member: "owned"}))
    with pytest.raises(ValueError, match="absolute path"):
        safe_extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_symlink_member_is_refused(server, tmp_path, capsys):
    """A zip member whose Unix mode says symbolic link (its body the link target) could point anywhere;
    the archive is refused before anything is written."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("RTE/train.tsv", RTE_TRAIN)
        link = zipfile.ZipInfo("RTE/dev.tsv")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "../../../outside.tsv")
    archive = tmp_path / "link.zip"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="refusing to extract member 'RTE/dev.tsv' \\(symbolic link\\)"):
        safe_extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    sources = {"RTE": serve(server, "RTE.zip", buffer.getvalue())}
    assert run_tool(server, tmp_path, sources) == 2
    assert "(symbolic link)" in capsys.readouterr().err
    assert leftovers(tmp_path / "glue") == []


def test_missing_file_fails_without_retrying_and_bad_task_name(server, tmp_path, capsys):
    sources = {"RTE": {"RTE.zip": Source(GLUE_HOST + "/glue/data/RTE.zip", None)}}
    assert run_tool(server, tmp_path, sources) == 1
    assert len(server.requests) == 1 and "404" in capsys.readouterr().err
    assert download_glue.main(["--tasks", "nope", "--data-dir", str(tmp_path)], sources=sources) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err


def mrpc_sources(rows: list, dev_pairs: list) -> dict:
    """SentEval-style MRPC source files: BOM header and CRLF line ends, as msr_paraphrase_*.txt are."""
    header = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n"
    train = (header + "".join(r + "\r\n" for r in rows)).encode("utf-8")
    test = (header + "1\t7\t8\tA test sentence .\tAnother one .\r\n").encode("utf-8")
    ids = "".join(f"{a}\t{b}\n" for a, b in dev_pairs).encode("utf-8")
    return {"msr_paraphrase_train.txt": train, "msr_paraphrase_test.txt": test, "mrpc_dev_ids.tsv": ids}


def test_mrpc_built_from_sources_via_the_mirror(server, tmp_path, monkeypatch):
    rows = [f"{i % 2}\t{100 + i}\t{200 + i}\tSentence {i} , one .\tSentence {i} , two ." for i in range(10)]
    files = mrpc_sources(rows, [(102, 202), (105, 205)])
    sources = {"MRPC": {}}
    for name, body in files.items():
        path = f"/senteval/{name}"
        server.files[path] = body
        sources["MRPC"][name] = Source(GLUE_HOST + path, hashlib.sha256(body).hexdigest())
    monkeypatch.setenv("TL_GLUE_BASE_URL", server.url)  # the mirror from the environment, not a flag
    assert download_glue.main(["--tasks", "mrpc", "--data-dir", str(tmp_path), "--quiet"], sources=sources) == 0
    dev = (tmp_path / "MRPC" / "dev.tsv").read_bytes()
    expected_header = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n".encode("utf-8")
    assert dev == expected_header + (rows[2] + "\n" + rows[5] + "\n").encode("utf-8")
    train = read_split(get_task("MRPC"), tmp_path, "train")
    assert len(train) == 8 and train.text_b[0] == "Sentence 0 , two ."
    assert (tmp_path / "MRPC" / "test.tsv").read_text().splitlines()[1] == "0\t7\t8\tA test sentence .\tAnother one ."


def test_mrpc_rebuild_reproduces_the_real_files_byte_for_byte(shared_glue, tmp_path):
    """The real MRPC train.tsv + dev.tsv turned back into a SentEval-style source file, then rebuilt."""
    train_lines = (shared_glue / "MRPC" / "train.tsv").read_text(encoding="utf-8").split("\n")[1:-1]
    dev_lines = (shared_glue / "MRPC" / "dev.tsv").read_text(encoding="utf-8").split("\n")[1:-1]
    files = mrpc_sources(dev_lines + train_lines, [line.split("\t")[1:3] for line in dev_lines])
    for name, body in files.items():
        (tmp_path / name).write_bytes(body)
    build_mrpc(tmp_path / "msr_paraphrase_train.txt", tmp_path / "mrpc_dev_ids.tsv", tmp_path / "out")
    for split in ("train", "dev"):
        assert (tmp_path / "out" / f"{split}.tsv").read_bytes() == (shared_glue / "MRPC" / f"{split}.tsv").read_bytes()


def test_from_local_archives_and_folders(tmp_path, capsys):
    local = tmp_path / "downloads"
    local.mkdir()
    body = make_zip({"WNLI/train.tsv": RTE_TRAIN.replace("not_entailment", "0").replace("entailment", "1"),
                     "WNLI/dev.tsv": RTE_DEV.replace("entailment", "1")})
    (local / "WNLI.zip").write_bytes(body)
    sources = {"WNLI": {"WNLI.zip": Source("http://unused.invalid/WNLI.zip", hashlib.sha256(body).hexdigest())}}
    assert download_glue.main(["--tasks", "wnli", "--data-dir", str(tmp_path / "a"), "--from", str(local)],
                              sources=sources) == 0
    assert len(read_split(get_task("WNLI"), tmp_path / "a", "train")) == 400
    assert (local / "WNLI.zip").exists()  # the user's file is left alone
    # a folder that already holds WNLI/ (e.g. another GLUE copy) is imported as is
    assert download_glue.main(["--tasks", "WNLI", "--data-dir", str(tmp_path / "b"), "--from", str(tmp_path / "a")],
                              sources=sources) == 0
    assert (tmp_path / "b" / "WNLI" / "dev.tsv").read_bytes() == (tmp_path / "a" / "WNLI" / "dev.tsv").read_bytes()
    assert capsys.readouterr().out.count("WNLI: imported") == 2
    # a tampered local archive is refused, and kept as it is
    (local / "WNLI.zip").write_bytes(body + b"junk")
    capsys.readouterr()
    assert download_glue.main(["--tasks", "WNLI", "--data-dir", str(tmp_path / "c"), "--from", str(local)],
                              sources=sources) == 2
    err = capsys.readouterr().err
    assert f"{local / 'WNLI.zip'}: sha256 differs from the official WNLI.zip's; the file was kept as it is" in err
    assert err.count("\n") == 1 and leftovers(tmp_path / "c") == []
    assert (local / "WNLI.zip").read_bytes() == body + b"junk"


# ------------------------------------------------------------------ bad input (docs/RELIABILITY.md)
def test_truncated_archive_names_the_zip_and_what_became_of_it(server, tmp_path, capsys):
    """A truncated zip whose checksum is not checked (a source without one, or --no-verify): one line
    naming the zip (its URL, or the user's file) and saying the download was deleted / the file kept."""
    whole = make_zip({"RTE/train.tsv": RTE_TRAIN, "RTE/dev.tsv": RTE_DEV})
    sources = {"RTE": serve(server, "RTE.zip", whole[: len(whole) // 2])}  # its sha256 is the truncated file's
    assert run_tool(server, tmp_path, sources) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {server.url}/glue/data/RTE.zip: not a complete zip archive, truncated or damaged")
    assert "(the download was deleted; run again to fetch it afresh)" in err and err.count("\n") == 1
    assert leftovers(tmp_path / "glue") == []
    local = tmp_path / "mine"
    local.mkdir()
    (local / "RTE.zip").write_bytes(whole[:-30])
    assert download_glue.main(["--tasks", "rte", "--data-dir", str(tmp_path / "b"), "--from", str(local),
                               "--no-verify"], sources=sources) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {local / 'RTE.zip'}: not a complete zip archive") and "the file was kept" in err
    assert (local / "RTE.zip").read_bytes() == whole[:-30] and leftovers(tmp_path / "b") == []


@pytest.mark.parametrize("name, body, needle", [
    ("msr_paraphrase_train.txt", b"h\r\n1\t1\t2\ta\tb\r\n1\t7\tonly three\r\n", "train.txt, line 3: 3 tab-separated"),
    ("msr_paraphrase_train.txt", b"h\r\n1\t1\t2\ta\tb\r\n1\t3\t4\t\xff\tb\r\n", "train.txt, line 3: not UTF-8"),
    ("msr_paraphrase_test.txt", b"h\r\n1\t1\t2\ta\tb\r\n1\t2\r\n", "test.txt, line 3: 2 tab-separated fields"),
    ("mrpc_dev_ids.tsv", b"1\t2\n3\n", "mrpc_dev_ids.tsv, line 2: 1 tab-separated fields, expected 2"),
])
def test_malformed_mrpc_source_names_file_and_line(server, tmp_path, capsys, name, body, needle):
    rows = [f"{i % 2}\t{100 + i}\t{200 + i}\tSentence {i} .\tOther {i} ." for i in range(4)]
    files = {**mrpc_sources(rows, [(101, 201)]), name: body}
    sources = {"MRPC": {}}
    for file_name, content in files.items():
        server.files[f"/senteval/{file_name}"] = content
        sources["MRPC"][file_name] = Source(GLUE_HOST + f"/senteval/{file_name}", hashlib.sha256(content).hexdigest())
    assert run_tool(server, tmp_path, sources) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {server.url}/senteval/") and needle in err and err.count("\n") == 1, err
    assert leftovers(tmp_path / "glue") == []


def test_unresolvable_host_fails_at_once(tmp_path, monkeypatch):
    """A host name that does not resolve (no network, a mistyped mirror) is not retried: one attempt,
    no wait, and no file left."""
    import socket

    calls = []

    def no_dns(*args, **kwargs):
        calls.append(args[0])
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(OSError, match="failed after 1 attempt\\(s\\): .*Name or service not known"):
        download("http://mirror.invalid/RTE.zip", tmp_path / "d" / "RTE.zip", retries=5, backoff=0.0, progress=False)
    assert calls == ["mirror.invalid"] and leftovers(tmp_path / "d") == []
