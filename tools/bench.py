"""Benchmarks of tl, each a ratio against a baseline measured in the same run.

    python tools/bench.py encoder     # tl's encoder vs transformers', forward+backward
    python tools/bench.py data        # first tokenization vs cached reload
    python tools/bench.py train       # a training epoch vs transformers padded to 128

Each sub-benchmark lives in tools/bench_<name>.py with a `main(argv)`; its results replace its own
section of docs/PERFORMANCE.md (between `<!-- bench:NAME -->` markers), so one benchmark never
overwrites another's figures.
"""
import importlib
import os
import platform
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
PERFORMANCE_MD = ROOT / "docs" / "PERFORMANCE.md"
BENCHMARKS = ("encoder", "data", "train")


def machine_description() -> str:
    """One line naming the machine, for the figures' provenance."""
    import torch

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return f"{device}; torch {torch.__version__}; python {platform.python_version()}"


def write_section(name: str, markdown: str, path: Path = PERFORMANCE_MD) -> None:
    """Replace the `<!-- bench:name -->` section of PERFORMANCE.md (append it if new), atomically."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Performance\n\nFigures written by `tools/bench.py`.\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown benchmark {argv[0]!r}; choose one of {', '.join(BENCHMARKS)}", file=sys.stderr)
            return 2
        return 0
    sys.path.insert(0, str(TOOLS))
    sys.path.insert(0, str(ROOT))
    module = importlib.import_module(f"bench_{argv[0]}")
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
