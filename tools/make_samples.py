"""Regenerate data/samples/: small real samples of the nine GLUE tasks in the official layout.

    python tools/make_samples.py [--source $TL_GLUE_DIR] [--out data/samples]

Each file is a seeded random sample of the well-formed rows of a real GLUE file, kept byte for byte
and in file order, with the file's header line. Where the source has no dev file (MNLI, QQP: only a
partial train file exists there), dev rows are drawn from the train rows not used for the sample's
train. The run is deterministic: the same source gives the same bytes. The provenance is written
to data/samples/README.md.
"""
import hashlib
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/flags.py

from flags import ArgumentParser  # noqa: E402
from tl.tasks import GLUE_TASKS, read_split  # noqa: E402

SEED = 0
TRAIN_ROWS, DEV_ROWS = 256, 128
# (train, dev) rows where they differ. MNLI rows carry four parse trees (~1 KB each): fewer rows keep
# the samples near 1 MB. SST-2 and QQP are the quickstart's pair (README): enough rows for MiniLM to
# learn both well above the majority class in two epochs on 2 CPU cores, and dev sets that show it.
ROWS = {"MNLI": (128, 64), "SST-2": (1000, 256), "QQP": (800, 256)}


def data_lines(path: Path, has_header: bool) -> tuple:
    """(header line or None, data lines) with their original bytes, line ends removed."""
    lines = path.read_bytes().split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return (lines[0], lines[1:]) if has_header else (None, lines)


def well_formed(lines: list, header) -> list:
    """Indices of lines with the file's field count (the header's, or the most common one)."""
    counts = [line.count(b"\t") for line in lines]
    expected = header.count(b"\t") if header is not None else max(set(counts), key=counts.count)
    return [i for i, c in enumerate(counts) if c == expected]


def sample(candidates: list, n: int, key: str) -> list:
    """n of `candidates` at random (seeded by `key`), in file order."""
    rng = random.Random(f"{SEED}-{key}")  # str seeds hash with sha512: stable across runs and platforms
    return sorted(rng.sample(candidates, min(n, len(candidates))))


def write(path: Path, header, lines: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = b"".join(line + b"\n" for line in ([header] if header is not None else []) + lines)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(body)
    tmp.replace(path)


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default=os.environ.get("TL_GLUE_DIR", ""),
                        help="the full GLUE files (default: $TL_GLUE_DIR)")
    parser.add_argument("--out", default=str(ROOT / "data" / "samples"), help="where the samples go")
    args = parser.parse_args(argv)
    source, out = Path(args.source), Path(args.out)
    if not source.is_dir():
        print(f"error: --source {source} is not a folder", file=sys.stderr)
        return 2
    provenance = []
    for spec in GLUE_TASKS:
        n_train, n_dev = ROWS.get(spec.name, (TRAIN_ROWS, DEV_ROWS))
        folder = source / spec.dirname
        train_file = folder / spec.files["train"]
        if not train_file.is_file():
            train_file = folder / "partial" / "train_subset.tsv"
        header, lines = data_lines(train_file, spec.has_header)
        good = well_formed(lines, header)
        train_rows = sample(good, n_train, f"{spec.name}-train")
        write(out / spec.dirname / spec.files["train"], header, [lines[i] for i in train_rows])
        provenance.append((spec.files["train"], spec.name, train_file, len(train_rows), "random rows"))
        held_out = sorted(set(good) - set(train_rows))
        for split in spec.eval_splits:
            dev_file = folder / spec.files[split]
            if dev_file.is_file():
                dev_header, dev_lines = data_lines(dev_file, spec.has_header)
                rows = sample(well_formed(dev_lines, dev_header), n_dev, f"{spec.name}-{split}")
                how = "random rows"
            else:  # no real dev file in the source: rows of the train file the train sample did not take
                dev_file, dev_header, dev_lines = train_file, header, lines
                rows = sample(held_out, n_dev, f"{spec.name}-{split}")
                held_out = sorted(set(held_out) - set(rows))
                how = "held-out TRAIN rows (no dev file in the source)"
            write(out / spec.dirname / spec.files[split], dev_header, [dev_lines[i] for i in rows])
            provenance.append((spec.files[split], spec.name, dev_file, len(rows), how))
        for split in spec.files:  # the sample must read cleanly
            assert read_split(spec, out, split).skipped == 0

    table = ["| file | rows | taken from (the full GLUE files) | source sha256 | how |", "|---|---|---|---|---|"]
    for name, task, src, rows, how in provenance:
        sha = hashlib.sha256(src.read_bytes()).hexdigest()
        table.append(f"| {task}/{name} | {rows} | {src.relative_to(source)} | {sha[:16]}… | {how} |")
    readme = README.format(seed=SEED, table="\n".join(table))
    (out / "README.md").write_text(readme)
    total = sum(p.stat().st_size for p in out.rglob("*.tsv"))
    print(f"wrote {len(provenance)} files, {total / 1e6:.2f} MB, to {out}")
    return 0


README = """# GLUE samples

Small real samples of the nine GLUE tasks, in the official layout (`<Task>/train.tsv`, `dev.tsv`;
MNLI `dev_matched.tsv` and `dev_mismatched.tsv`), for the tests and the quickstart. They are far too
small to train a model worth reporting: for real runs, `python tools/download_glue.py`.

Made by `python tools/make_samples.py` (deterministic, seed {seed}) from the real GLUE files in
the official GLUE distribution (tools/download_glue.py checks each archive's sha256). Every row is a
random row of the source file, kept byte for byte and in file order; the file's header line is kept
(CoLA has none); malformed rows are left out (the one 5-field row of the QQP file).

Caveats:
- **MNLI** and **QQP**: the source has only a partial train file (`<Task>/partial/train_subset.tsv`,
  real rows of the official train set), no dev file. Their dev samples here are **train rows**, held
  out from the sample's train file (disjoint from it). MNLI's `dev_matched.tsv` and
  `dev_mismatched.tsv` keep the 12-column train layout (official dev files have 16 columns, with
  `label1`..`label5`; the reader finds `sentence1`, `sentence2` and `gold_label` by name in both), and
  the "mismatched" rows come from the five training genres, so they are not mismatched at all.
- **QNLI** train comes from its partial file; its dev sample from the official dev file.
- MNLI has fewer rows (128 train, 64 + 64 dev) because each of its rows carries four parse trees;
  SST-2 (1000 train, 256 dev) and QQP (800 train, 256 dev) have more, for the README's quickstart.
- Licences: each task keeps its source's terms; see the GLUE benchmark's terms (gluebenchmark.com).

{table}
"""

if __name__ == "__main__":
    sys.exit(main())
