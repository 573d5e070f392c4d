"""Download the GLUE tasks into data/glue/ in the official layout (one folder per task).

    python tools/download_glue.py                          # all nine tasks into data/glue
    python tools/download_glue.py --tasks RTE,MRPC --data-dir data/glue
    python tools/download_glue.py --from ~/Downloads       # archives (CoLA.zip, ...) or task folders on disk
    python tools/download_glue.py --base-url http://mirror.example/   # instead of dl.fbaipublicfiles.com

Follows GLUE's own `download_glue_data.py` (nyu-mll/GLUE-baselines; W4ngatang's gist): the same
archives on dl.fbaipublicfiles.com, each unpacked into a folder named after the task, and MRPC
split from SentEval's `msr_paraphrase_train.txt` by `mrpc_dev_ids.tsv` (see `build_mrpc`). The
sizes and sha256 are those recorded by huggingface/datasets (`datasets/glue/dataset_infos.json`);
every file's sha256 is checked. Files travel through tl.hub's `download`, so an interrupted download
resumes on the next run; a task already present is skipped, so a second run does nothing. The mirror
can also be set with TL_GLUE_BASE_URL.

Nothing half-written is ever left where a reader would take it for data: a download grows in
`<name>.part` (kept for resuming only while its bytes may still be right), an archive is unpacked in a
temporary folder and moved into place only when complete, and a file is written as temp + os.replace;
a failure removes its temporary files. A bad input is one line naming the file (by its URL, or the
--from file) and line where there is one: a truncated zip, a malformed MRPC source, a checksum
mismatch. A download that fails its check is deleted; a file of the user's (--from) is never touched.
A host name that does not resolve fails at once (tl.hub does not retry it).
"""
import os
import shutil
import stat
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/flags.py

from flags import ArgumentParser  # noqa: E402
from tl.hub import download, sha256_file  # noqa: E402
from tl.tasks import GLUE_TASKS, TaskSpec, get_task, read_text  # noqa: E402

GLUE_HOST = "https://dl.fbaipublicfiles.com"


@dataclass(frozen=True)
class Source:
    """One file to fetch: where from, and the sha256 (and size) it must have (None = not checked)."""

    url: str
    sha256: Optional[str]
    size: Optional[int] = None


def _zip(name: str, sha256: str, size: int) -> dict:
    return {name: Source(f"{GLUE_HOST}/glue/data/{name}", sha256, size)}


# task -> {local file name: Source}. A task with a .zip is unpacked; MRPC is rebuilt by build_mrpc.
GLUE_SOURCES = {
    "CoLA": _zip("CoLA.zip", "f212fcd832b8f7b435fb991f101abf89f96b933ab400603bf198960dfc32cbff", 376971),
    "SST-2": _zip("SST-2.zip", "d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa", 7439277),
    "QQP": _zip("QQP-clean.zip", "40e7c862c04eb26ee04b67fd900e76c45c6ba8e6d8fab4f8f1f8072a1a3fbae0", 41696084),
    "STS-B": _zip("STS-B.zip", "e60a6393de5a8b5b9bac5020a1554b54e3691f9d600b775bd131e613ac179c85", 802872),
    "MNLI": _zip("MNLI.zip", "e7c1d896d26ed6caf700110645df426cc2d8ebf02a5ab743d5a5c68ac1c83633", 312783507),
    "QNLI": _zip("QNLIv2.zip", "e634e78627a29adaecd4f955359b22bf5e70f2cbd93b493f2d624138a0c0e5f5", 10627589),
    "RTE": _zip("RTE.zip", "6bf86de103ecd335f3441bd43574d23fef87ecc695977a63b82d5efb206556ee", 697150),
    "WNLI": _zip("WNLI.zip", "ae0e8e4d16f4d46d4a0a566ec7ecceccfd3fbfaa4a7a4b4e02848c0f2561ac46", 28999),
    "MRPC": {
        "msr_paraphrase_train.txt": Source(f"{GLUE_HOST}/senteval/senteval_data/msr_paraphrase_train.txt",
                                           "60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89", 1047044),
        "msr_paraphrase_test.txt": Source(f"{GLUE_HOST}/senteval/senteval_data/msr_paraphrase_test.txt",
                                          "a04e271090879aaba6423d65b94950c089298587d9c084bf9cd7439bd785f784", 441275),
        "mrpc_dev_ids.tsv": Source(f"{GLUE_HOST}/glue/data/mrpc_dev_ids.tsv",
                                   "971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7", 6222),
    },
}
# GLUE's script saved mrpc_dev_ids.tsv as MRPC/dev_ids.tsv; --from accepts either name.
_OTHER_NAMES = {"mrpc_dev_ids.tsv": ("dev_ids.tsv",)}


def _unsafe_member(info: zipfile.ZipInfo) -> Optional[str]:
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "'..' in path"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    return None


def safe_extract_zip(archive, dest) -> None:
    """Extract `archive` into the folder `dest`, refusing (before writing anything) any member with an
    absolute path, a '..' component or a symbolic link, which could write outside `dest`. ValueError
    naming the archive when it is truncated or damaged."""
    try:
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                why = _unsafe_member(info)
                if why:
                    raise ValueError(f"{archive}: refusing to extract member {info.filename!r} ({why})")
            z.extractall(dest)
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise ValueError(f"{archive}: not a complete zip archive, truncated or damaged ({e})") from None


def build_mrpc(train_txt, dev_ids_tsv, out_dir, test_txt=None) -> None:
    """MRPC's train.tsv / dev.tsv (/ test.tsv) exactly as GLUE's `download_glue_data.py` `format_mrpc`
    writes them: the header line copied (UTF-8 BOM kept), then each row split into `label, id1, id2,
    s1, s2` (`row.strip().split('\\t')`) and re-joined with tabs and '\\n'; a row goes to dev.tsv when
    [id1, id2] is in dev_ids.tsv, otherwise to train.tsv. test.tsv numbers its rows from 0. ValueError
    naming the file and line of a row without its 5 (dev_ids: 2) fields or of bytes that are not UTF-8."""
    dev_ids = {tuple(row) for row in _source_rows(dev_ids_tsv, 2, header=False)[1]}
    out_dir = Path(out_dir)
    header, rows = _source_rows(train_txt, 5)
    train = ["\t".join(row) + "\n" for row in rows if tuple(row[1:3]) not in dev_ids]
    dev = ["\t".join(row) + "\n" for row in rows if tuple(row[1:3]) in dev_ids]
    write_text_atomic(out_dir / "train.tsv", header + "".join(train))
    write_text_atomic(out_dir / "dev.tsv", header + "".join(dev))
    if test_txt is not None:
        rows = _source_rows(test_txt, 5)[1]
        lines = ["index\t#1 ID\t#2 ID\t#1 String\t#2 String\n"]
        lines += [f"{index}\t{id1}\t{id2}\t{s1}\t{s2}\n" for index, (_, id1, id2, s1, s2) in enumerate(rows)]
        write_text_atomic(out_dir / "test.tsv", "".join(lines))


def _source_rows(path, n_fields: int, header: bool = True) -> tuple:
    """(the header line, the rows as lists of fields) of an MRPC source file read as GLUE's script reads
    it: text mode ("\r\n" and "\r" end lines), each line `strip()`ped and split at tabs."""
    lines = read_text(path, "utf-8").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    rows = [line.strip().split("\t") for line in lines[header:]]
    for line_no, fields in enumerate(rows, start=1 + header):
        if len(fields) != n_fields:
            raise ValueError(f"{path}, line {line_no}: {len(fields)} tab-separated fields, expected {n_fields}")
    return (lines[0] + "\n" if header and lines else ""), rows


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write (disk full) leaves no .tmp behind


def task_present(spec: TaskSpec, data_dir) -> bool:
    return all((Path(data_dir) / spec.dirname / f).is_file() for f in spec.files.values())


def _find_local(from_path: Path, spec: TaskSpec, name: str) -> Optional[Path]:
    for candidate_name in (name, *_OTHER_NAMES.get(name, ())):
        for folder in (from_path, from_path / spec.dirname):
            if (folder / candidate_name).is_file():
                return folder / candidate_name
    return None


def fetch_task(spec: TaskSpec, data_dir, sources: dict, base_url: Optional[str] = None,
               from_path=None, verify: bool = True, retries: int = 5, backoff: float = 1.0,
               progress: bool = True) -> str:
    """Put one GLUE task's files in `data_dir/<task>/`; returns "present", "imported" or "downloaded".

    `sources` maps file names to Sources (GLUE_SOURCES[task]). With `from_path`, files come from disk:
    a ready task folder `from_path/<task>/` is copied, else the archives (or MRPC source files) are
    taken from `from_path` or `from_path/<task>/`. Otherwise they are downloaded, with `base_url`
    replacing https://dl.fbaipublicfiles.com (a mirror)."""
    data_dir = Path(data_dir)
    if task_present(spec, data_dir):
        return "present"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=f".{spec.dirname}-", dir=data_dir) as tmp:
            return _assemble(spec, data_dir, Path(tmp), sources, base_url, from_path, verify,
                             dict(retries=retries, backoff=backoff, progress=progress))
    finally:  # nothing left behind on failure either: the temporary folder goes, and an empty .downloads
        if (data_dir / ".downloads").is_dir() and not any((data_dir / ".downloads").iterdir()):
            (data_dir / ".downloads").rmdir()


def _assemble(spec: TaskSpec, data_dir: Path, tmp: Path, sources: dict, base_url, from_path, verify: bool,
              how_to_download: dict) -> str:
    """fetch_task's work, in the temporary folder `tmp`; `how_to_download`: tl.hub.download's options."""
    staged = tmp / spec.dirname  # the task folder is assembled here, then moved into place
    files, origins = {}, {}  # file name -> fetched path; -> where it came from (the user's file or the URL)
    if from_path is not None and task_present(spec, from_path):
        shutil.copytree(Path(from_path) / spec.dirname, staged)
        how = "imported"
    else:
        for name, source in sources.items():
            if from_path is not None:
                local = _find_local(Path(from_path), spec, name)
                if local is None:
                    raise FileNotFoundError(f"--from {from_path}: neither a {spec.dirname}/ folder with "
                                            f"{', '.join(spec.files.values())} nor {name} found there")
                if verify and source.sha256 and sha256_file(local) != source.sha256:
                    raise ValueError(f"{local}: sha256 differs from the official {name}'s; the file was kept as it "
                                     "is: replace it with the official file (or --no-verify accepts it)")
                files[name], origins[name] = tmp / name, str(local)
                shutil.copyfile(local, files[name])
            else:
                url = source.url
                if base_url and url.startswith(GLUE_HOST):
                    url = base_url.rstrip("/") + url[len(GLUE_HOST):]
                # downloads live beside the data (not in tmp) so that a killed run can resume them
                files[name] = download(url, data_dir / ".downloads" / name, source.sha256 if verify else None,
                                       **how_to_download)
                origins[name] = url
        _install(spec, files, tmp, staged, origins, kept=from_path is not None)
        how = "imported" if from_path is not None else "downloaded"
    if not task_present(spec, tmp):
        raise ValueError(f"{spec.name}: the fetched files do not contain {', '.join(spec.files.values())}")
    _move_into_place(staged, data_dir / spec.dirname, set(spec.files.values()))
    if from_path is None:
        for path in files.values():
            path.unlink(missing_ok=True)
    return how


def _install(spec: TaskSpec, files: dict, tmp: Path, staged: Path, origins: dict, kept: bool) -> None:
    """Unpack the archives (or build MRPC) into `staged`. An error names each file by its origin (the
    user's file, or the URL) and says what became of it: a user's file is kept, a download deleted."""
    try:
        if spec.name == "MRPC":
            staged.mkdir()
            for name, path in files.items():  # keep the sources beside the split, as GLUE's script does
                shutil.copyfile(path, staged / _OTHER_NAMES.get(name, (name,))[0])
            build_mrpc(files["msr_paraphrase_train.txt"], files["mrpc_dev_ids.tsv"], staged,
                       files.get("msr_paraphrase_test.txt"))
        else:
            for path in files.values():
                safe_extract_zip(path, tmp / "unpacked")
            if not (tmp / "unpacked" / spec.dirname).is_dir():
                raise ValueError(f"{spec.name}: archive {', '.join(files)} has no {spec.dirname}/ folder")
            os.replace(tmp / "unpacked" / spec.dirname, staged)
    except ValueError as e:
        message = str(e)
        for name, path in files.items():
            path.unlink(missing_ok=True)  # a bad archive is not worth resuming; a user's file is a copy
            message = message.replace(str(path), origins[name])
        fate = "the file was kept as it is" if kept else "the download was deleted; run again to fetch it afresh"
        raise ValueError(f"{message} ({fate})") from None


def _move_into_place(staged: Path, target: Path, split_files: set) -> None:
    """Move the complete staged folder to `target`. Into an incomplete old folder, entries are moved one
    by one, the split files last, so the task only looks present (task_present) once all are there."""
    if not target.exists():
        os.replace(staged, target)
        return
    for entry in sorted(staged.iterdir(), key=lambda e: e.name in split_files):
        destination = target / entry.name
        if destination.is_dir() and not destination.is_symlink():
            shutil.rmtree(destination)
        os.replace(entry, destination)


def parse_args(argv):
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["all"],
                        help="task names, comma- or space-separated (case-insensitive; default: all)")
    parser.add_argument("--data-dir", default="data/glue", help="where the task folders go (default: data/glue)")
    parser.add_argument("--from", dest="from_path", metavar="PATH",
                        help="take archives, MRPC source files or task folders from this folder, not the network")
    parser.add_argument("--base-url", default=os.environ.get("TL_GLUE_BASE_URL"),
                        help="mirror replacing https://dl.fbaipublicfiles.com (env TL_GLUE_BASE_URL)")
    parser.add_argument("--no-verify", action="store_true", help="accept files whose sha256 differs from the table")
    parser.add_argument("--retries", type=int, default=5, help="retries per file after a network error (default 5)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv=None, sources=None, backoff: float = 1.0) -> int:
    """`sources` (default GLUE_SOURCES) and `backoff` are for tests."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sources = GLUE_SOURCES if sources is None else sources
    names = [n for item in args.tasks for n in item.split(",") if n]
    try:
        specs = list(GLUE_TASKS) if names == ["all"] else [get_task(n) for n in names]
        missing = [s.name for s in specs if s.name not in sources]
        if missing:
            raise ValueError(f"--tasks: no download source for {', '.join(missing)}")
        if args.from_path is not None and not Path(args.from_path).is_dir():
            raise ValueError(f"--from {args.from_path}: not a folder")
        for spec in specs:
            how = fetch_task(spec, args.data_dir, sources[spec.name], base_url=args.base_url,
                             from_path=args.from_path, verify=not args.no_verify, retries=args.retries,
                             backoff=backoff, progress=not args.quiet)
            print(f"{spec.name}: {how} ({Path(args.data_dir) / spec.dirname})")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
