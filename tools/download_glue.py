"""Download the GLUE tasks into data/glue/ in the official layout (one folder per task).

    python tools/download_glue.py                          # all nine tasks into data/glue
    python tools/download_glue.py --tasks RTE,MRPC --data-dir data/glue
    python tools/download_glue.py --from ~/Downloads       # archives (CoLA.zip, ...) or task folders on disk
    python tools/download_glue.py --base-url http://mirror.example/   # instead of dl.fbaipublicfiles.com

Same archives and MRPC construction as GLUE's download_glue_data.py (see tl/download.py); every
file's sha256 is checked; an interrupted download resumes on the next run; a task already present is
skipped, so a second run does nothing. The mirror can also be set with TL_GLUE_BASE_URL.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tl.cli import ArgumentParser  # noqa: E402
from tl.download import GLUE_SOURCES, fetch_task  # noqa: E402
from tl.tasks import GLUE_TASKS, get_task  # noqa: E402


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
    """`sources` (default tl.download.GLUE_SOURCES) and `backoff` are for tests."""
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
