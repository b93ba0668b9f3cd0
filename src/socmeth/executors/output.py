"""Keep the capped tail of an attempt's output.

A command may print for hours; only the last `cap` bytes are kept (SPEC "Limits": 1 MiB
by default). The buffer is a deque of the chunks as they arrived, trimmed whole chunks
at a time from the front, so an append costs O(1) amortised however long it runs.
"""

from __future__ import annotations

from collections import deque

DEFAULT_OUTPUT_CAP = 1024 * 1024

# A UTF-8 character is at most 4 bytes: its first byte and up to 3 continuation bytes.
_MAX_CONTINUATION_BYTES = 3


class OutputTail:
    """Hold the last `cap` bytes appended, and say whether anything was left out.

    `version` increases on every append that changed the content, so a reader can tell
    cheaply whether there is anything new to copy.
    """

    def __init__(self, cap: int = DEFAULT_OUTPUT_CAP) -> None:
        if cap < 1:
            raise ValueError(f"output cap must be at least 1 byte, not {cap}")
        self._cap = cap
        self._chunks: deque[bytes] = deque()
        self._held = 0
        self._front_dropped = False
        self._truncated = False
        self._version = 0

    @property
    def cap(self) -> int:
        """Return the most bytes the tail keeps."""
        return self._cap

    @property
    def size(self) -> int:
        """Return the bytes the tail holds now, never more than `cap`."""
        return min(self._held, self._cap)

    @property
    def truncated(self) -> bool:
        """Tell whether some output was left out because of the cap."""
        return self._truncated

    @property
    def version(self) -> int:
        """Return a number that grows with every change of the content."""
        return self._version

    def append(self, data: bytes) -> None:
        """Add output at the end, dropping the oldest bytes beyond the cap."""
        if not data:
            return

        if len(data) > self._cap:
            data = data[-self._cap :]
            self._front_dropped = True

        self._chunks.append(bytes(data))
        self._held += len(data)
        self._trim()
        self._truncated = self._truncated or self._front_dropped
        self._version += 1

    def mark_truncated(self) -> None:
        """Record that the producer stopped at the cap and left output unread."""
        if self._truncated:
            return
        self._truncated = True
        self._version += 1

    def text(self) -> str:
        """Return the tail decoded as UTF-8, starting on a character boundary.

        Bytes that are not UTF-8 become U+FFFD, three bytes where there was one, so
        the text of binary output is cut again to stay within the cap when stored,
        which marks the tail truncated: read `truncated` after `text()`.
        """
        data = b"".join(self._chunks)[-self._cap :]
        if self._front_dropped:
            data = data[_leading_continuation_bytes(data) :]
        text = data.decode("utf-8", errors="replace")
        if "\ufffd" not in text:
            return text
        encoded = text.encode()
        if len(encoded) <= self._cap:
            return text
        self._truncated = True
        return encoded[-self._cap :].decode("utf-8", errors="ignore")

    def _trim(self) -> None:
        # Whole chunks only: the partial first chunk is sliced off in text(), so an
        # append never copies the kept bytes.
        while self._held - len(self._chunks[0]) >= self._cap:
            self._held -= len(self._chunks.popleft())
            self._front_dropped = True
        if self._held > self._cap:
            self._front_dropped = True


def _leading_continuation_bytes(data: bytes) -> int:
    limit = min(len(data), _MAX_CONTINUATION_BYTES)
    count = 0
    while count < limit and data[count] & 0xC0 == 0x80:
        count += 1
    return count


def utf8_head(data: bytes, limit: int) -> bytes:
    """Return at most `limit` bytes of `data`, not ending inside a UTF-8 character."""
    if len(data) <= limit:
        return data

    # data[limit] is the first byte left out; if it continues a character, that
    # character starts at most 3 bytes earlier and is left out whole.
    lowest = max(limit - _MAX_CONTINUATION_BYTES, 0)
    for end in range(limit, lowest - 1, -1):
        if data[end] & 0xC0 != 0x80:
            return data[:end]
    # No character start nearby: not UTF-8 (binary), so the byte limit is all there is.
    return data[:limit]
