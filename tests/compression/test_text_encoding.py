"""Text that is not UTF-8: the first bad byte is found (offset and line, across read chunks),
and ``load_texts`` refuses the file with the same message the API gives at submit."""

from __future__ import annotations

from pathlib import Path

import pytest

from slimforge.compression.data import TextSource, load_texts
from slimforge.compression.text_encoding import NotUtf8Error, check_utf8

LATIN1 = "café crème brûlée\n\nune deuxième phrase\n".encode("latin-1")


def _reference(data: bytes) -> tuple[int, int]:
    """(byte offset, 1-based line) of the first undecodable byte, by Python's own decoder."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start, data[: exc.start].count(b"\n") + 1
    raise AssertionError("the data is valid UTF-8")


@pytest.mark.parametrize(
    "data",
    [
        LATIN1,
        "ok é\n".encode() * 300_000 + LATIN1,  # the bad byte beyond the first 1 MiB chunk
        b"x" * ((1 << 20) - 1) + "é".encode() + b"\xff",  # a character split by the chunk edge
        "fin é".encode()[:-1],  # a sequence cut by the end of the file
    ],
    ids=["latin1", "after-first-chunk", "split-character", "truncated-end"],
)
def test_the_first_bad_byte_is_found(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "text.txt"
    path.write_bytes(data)
    with pytest.raises(NotUtf8Error) as info:
        check_utf8(path, label="calibration.path")
    offset, line = _reference(data)
    assert (info.value.offset, info.value.line) == (offset, line)
    assert info.value.byte == data[offset]
    message = str(info.value)
    assert message.startswith(f"calibration.path: {path} is not UTF-8 text")
    assert f"byte offset {offset}" in message and "iconv -f latin1 -t utf-8" in message


def test_utf8_text_passes(tmp_path: Path) -> None:
    path = tmp_path / "ok.txt"
    path.write_text("café crème\n" * 1000, encoding="utf-8")
    check_utf8(path)  # no error


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_load_texts_names_the_file_offset_and_fix(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"calib{suffix}"
    data = b'{"text": "ok"}\n{"text": "caf\xe9"}\n' if suffix == ".jsonl" else LATIN1
    path.write_bytes(data)
    with pytest.raises(NotUtf8Error) as info:
        load_texts(TextSource(path=str(path), label="evaluation.path"))
    with pytest.raises(NotUtf8Error) as direct:
        check_utf8(path, label="evaluation.path")
    assert str(info.value) == str(direct.value)  # the same message as at submit
    assert info.value.offset == _reference(data)[0]
    assert isinstance(info.value, ValueError)  # the worker's runner fails the job with it
