"""Text files must be UTF-8: find the first byte that is not, and say how to fix the file.

Torch-free: the API checks a job's text files with it at submit, and ``load_texts`` raises the
same error when it reads one, so a file is refused with one message wherever it is caught.
"""

from __future__ import annotations

import codecs
from pathlib import Path

__all__ = ["NotUtf8Error", "check_utf8"]

_CHUNK = 1 << 20  # bytes read at a time: a large corpus is checked without holding it whole


class NotUtf8Error(ValueError):
    """A text file holds bytes that are not UTF-8.

    Attributes: ``path``; ``offset``, the 0-based byte offset of the first undecodable byte;
    ``line``, its 1-based line; ``byte``, its value; ``label``, the request field the file was
    given in (e.g. ``"calibration.path"``) or None.
    """

    def __init__(self, path: Path, *, offset: int, line: int, byte: int, label: str | None):
        self.path, self.offset, self.line, self.byte, self.label = path, offset, line, byte, label
        where = f"{label}: " if label else ""
        super().__init__(
            f"{where}{path} is not UTF-8 text: byte 0x{byte:02x} at byte offset {offset} "
            f"(line {line}) cannot be decoded (a Latin-1 or Windows-1252 file, perhaps). "
            f"Convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > "
            f"{path.stem}.utf8{path.suffix}`, and give the converted file"
        )


def check_utf8(path: Path, *, label: str | None = None) -> None:
    """Raise :class:`NotUtf8Error` (a ``ValueError``) at the first byte of ``path`` that is not
    UTF-8; a sequence cut at the end of the file counts. Reads the file in 1 MiB chunks.

    Raises ``OSError`` if the file cannot be read.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    offset, lines = 0, 1  # bytes and newlines of the chunks before this one
    with path.open("rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            final = not chunk
            try:
                decoder.decode(chunk, final=final)
            except UnicodeDecodeError as exc:
                # exc.start counts from the bytes the decoder held back plus this chunk.
                pending = len(exc.object) - len(chunk)
                at = offset - pending + exc.start
                head = exc.object[: exc.start]
                line = lines + head.count(b"\n") - exc.object[:pending].count(b"\n")
                raise NotUtf8Error(
                    path, offset=at, line=line, byte=exc.object[exc.start], label=label
                ) from None
            if final:
                return
            offset += len(chunk)
            lines += chunk.count(b"\n")
