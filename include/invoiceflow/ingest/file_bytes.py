"""The first pass over a source file's bytes: is it text, and may any value need stripping.

Every value is read with the whitespace around it stripped (``str.strip``), a Python call per
value: at a million rows of nine columns 2 to 3 s, more than the rest of reading the file.
Whitespace at a value's edge can only sit next to a comma, a line end or the file's ends, so one
vectorised pass over the bytes, which the NUL-byte check reads anyway, tells whether any value has
it; when none can, the reads skip the strip (``reading.read_feed_chunks``). The test never misses
one: a file with a quote character (a quoted value's edges are not the separators'), a carriage
return that does not end a line, or a byte that may begin or end a non-ASCII whitespace character
next to a separator counts as padded and is stripped as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

BLOCK_BYTES = 1 << 22
"""Bytes read at a time: the pass's memory does not grow with the file."""


@dataclass(frozen=True)
class ByteFacts:
    nul_line: int | None  # the line of the first NUL byte: a binary or corrupted file, not CSV text
    padded: bool  # a value may begin or end with whitespace (False: none does)


def scan(path: Path) -> ByteFacts:
    """Where the first NUL byte is, if any, and whether a value may need stripping."""
    line, padded, previous = 1, False, b"\n"  # the file's start is a value's start, as after a line end
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(BLOCK_BYTES), b""):
            at = block.find(b"\0")
            if at >= 0:
                return ByteFacts(line + block.count(b"\n", 0, at), padded=True)
            line += block.count(b"\n")
            padded = padded or _maybe_padded(previous + block)
            previous = block[-1:]
    return ByteFacts(None, padded or bool(_edge_bytes()[1][previous[0]]))


def _maybe_padded(data: bytes) -> bool:
    """Whether a value in ``data`` (a block of the file after the last byte of the block before)
    may begin or end with whitespace: the bytes on either side of each separator, looked up."""
    import numpy as np

    # a CR at the block's end is judged with the next block, which begins with it
    if b'"' in data or data.count(b"\r") - data.endswith(b"\r") != data.count(b"\r\n"):
        return True
    begins, ends = _edge_bytes()
    octets = np.frombuffer(data, dtype=np.uint8)
    # a CR is a separator here: a CR LF ends the line, and the byte before it ends a value
    at = np.flatnonzero((octets == ord(",")) | (octets == ord("\n")) | (octets == ord("\r")))
    after, before = at[at < len(octets) - 1] + 1, at[at > 0] - 1
    return bool(begins[octets[after]].any() or ends[octets[before]].any())


@cache
def _edge_bytes() -> tuple[Any, Any]:
    """Per byte value: may it begin whitespace, may it end whitespace (as ``str.strip`` sees it, in UTF-8)."""
    import numpy as np

    spaces = list(b"\t\x0b\x0c\x1c\x1d\x1e\x1f ")  # ASCII whitespace other than line ends (str.isspace)
    first = list(b"\xc2\xe1\xe2\xe3")  # may begin a non-ASCII one: U+0085, U+00A0, U+1680, U+2000..., U+3000
    last = [*range(0x80, 0x8B), 0x9F, 0xA0, 0xA8, 0xA9, 0xAF]  # may end one
    begins, ends = np.zeros(256, dtype=bool), np.zeros(256, dtype=bool)
    begins[spaces + first] = True
    ends[spaces + last] = True
    return begins, ends
