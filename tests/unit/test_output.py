"""Test the capped output tail an attempt writes into."""

from __future__ import annotations

import pytest

from socmeth.executors.output import DEFAULT_OUTPUT_CAP, OutputTail, utf8_head


def test_default_cap_is_one_mebibyte() -> None:
    assert OutputTail().cap == DEFAULT_OUTPUT_CAP == 1024 * 1024


def test_holds_everything_below_the_cap() -> None:
    tail = OutputTail(cap=100)

    tail.append(b"hello ")
    tail.append(b"world\n")

    assert tail.text() == "hello world\n"
    assert tail.size == 12
    assert not tail.truncated


def test_output_of_exactly_the_cap_is_not_truncated() -> None:
    tail = OutputTail(cap=10)

    tail.append(b"01234")
    tail.append(b"56789")

    assert tail.text() == "0123456789"
    assert not tail.truncated


def test_keeps_the_last_cap_bytes_of_many_appends() -> None:
    tail = OutputTail(cap=10)

    for digit in range(10):
        tail.append(f"line{digit}\n".encode())

    assert tail.text() == "ne8\nline9\n"
    assert tail.size == 10
    assert tail.truncated


def test_keeps_the_end_of_one_append_larger_than_the_cap() -> None:
    tail = OutputTail(cap=4)

    tail.append(b"ab")
    tail.append(b"0123456789")

    assert tail.text() == "6789"
    assert tail.size == 4
    assert tail.truncated


@pytest.mark.parametrize(
    ("character", "cap"),
    [("é", 5), ("€", 7), ("🙂", 9), ("🙂", 10)],
    ids=["two-byte", "three-byte", "four-byte", "four-byte-offset"],
)
def test_truncated_text_starts_on_a_character_boundary(
    character: str, cap: int
) -> None:
    tail = OutputTail(cap=cap)

    tail.append((character * 20).encode())

    text = tail.text()
    assert "\ufffd" not in text
    assert text == character * len(text)
    assert len(text.encode()) > cap - len(character.encode())


def test_text_replaces_bytes_that_are_not_utf8() -> None:
    tail = OutputTail(cap=100)

    tail.append(b"ok \xff\xfe done")

    assert tail.text() == "ok \ufffd\ufffd done"


def test_version_changes_on_every_append() -> None:
    tail = OutputTail(cap=4)
    seen = [tail.version]

    for chunk in (b"a", b"b", b"cdefgh", b"i"):
        tail.append(chunk)
        seen.append(tail.version)

    assert seen == sorted(set(seen))
    assert len(seen) == 5


def test_empty_append_leaves_the_version_alone() -> None:
    tail = OutputTail()
    tail.append(b"x")
    before = tail.version

    tail.append(b"")

    assert tail.version == before


def test_mark_truncated_flags_the_tail_and_changes_the_version_once() -> None:
    tail = OutputTail(cap=100)
    tail.append(b"head of a long body")
    before = tail.version

    tail.mark_truncated()
    after_first = tail.version
    tail.mark_truncated()

    assert tail.truncated
    assert after_first > before
    assert tail.version == after_first
    assert tail.text() == "head of a long body"


def test_refuses_a_cap_below_one_byte() -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        OutputTail(cap=0)


def test_appended_buffers_are_copied() -> None:
    tail = OutputTail()
    buffer = bytearray(b"abc")

    tail.append(buffer)
    buffer[:] = b"xyz"

    assert tail.text() == "abc"


@pytest.mark.parametrize(
    ("data", "limit", "expected"),
    [
        (b"abcdef", 10, b"abcdef"),
        (b"abcdef", 3, b"abc"),
        ("aé".encode(), 2, b"a"),
        ("a€".encode(), 3, b"a"),
        ("a🙂".encode(), 4, b"a"),
        ("a🙂b".encode(), 5, "a🙂".encode()),
        (b"\x80\x80\x80\x80\x80\x80", 5, b"\x80\x80\x80\x80\x80"),
    ],
    ids=["fits", "ascii", "two-byte", "three-byte", "four-byte", "after", "binary"],
)
def test_utf8_head_never_ends_inside_a_character(
    data: bytes, limit: int, expected: bytes
) -> None:
    assert utf8_head(data, limit) == expected


def test_binary_output_stays_within_the_cap_once_decoded() -> None:
    tail = OutputTail(cap=1000)
    tail.append(bytes(range(128, 256)) * 20)  # not UTF-8: each byte becomes U+FFFD

    text = tail.text()

    assert len(text.encode()) <= 1000
    assert tail.truncated
