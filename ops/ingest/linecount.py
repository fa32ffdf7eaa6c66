"""Byte-level line count of a plain file, independent of any CSV parser (the row accounting's ground truth).

Run as a script (`python ops/ingest/linecount.py FILE`) it imports only the stdlib and numpy, so a child process
can count a multi-GB file on its own core while the parent parses other files. The file is mapped in 16 MB
windows and newlines are counted by numpy: ~3x less CPU than `bytes.count` over `read()` chunks (measured on a
3.4 GB file: 1.1 vs 3.3 CPU s), and each window is unmapped before the next, so the mapped pages never add up
in the process's RSS.

It also finds the first line that is not valid UTF-8, so that the CSV reader's strict (faster) decoding is used
only on files that have none: a window whose bytes are all ASCII is valid by construction (one numpy max), the
others go through an incremental UTF-8 decoder.
"""
from __future__ import annotations

import codecs
import mmap
import os
import sys

import numpy as np

WINDOW = 16 << 20  # window offsets must be multiples of mmap.ALLOCATIONGRANULARITY (4 KiB Linux, 64 KiB Windows)


def count_lines(path: str | os.PathLike[str]) -> int:
    """Newline bytes in the file, plus one for a final line without its newline."""
    return scan(path)[0]


def scan(path: str | os.PathLike[str]) -> tuple[int, int | None]:
    """(line count as count_lines, 1-based number of the first line that is not valid UTF-8 or None)."""
    size = os.path.getsize(path)
    if size == 0:
        return 0, None
    total, bad_line = 0, None
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as fh:
        for offset in range(0, size, WINDOW):
            length = min(WINDOW, size - offset)
            with mmap.mmap(fh.fileno(), length, access=mmap.ACCESS_READ, offset=offset) as window:
                view = np.frombuffer(window, dtype=np.uint8)
                if bad_line is None and (int(view.max()) >= 128 or decoder.getstate()[0]):
                    try:
                        # final on the last window: a file that ends inside a multi-byte character raises here
                        decoder.decode(window[:], final=offset + length == size)
                    except UnicodeDecodeError as exc:  # exc.start counts bytes still buffered from the last window
                        at = max(0, exc.start - len(exc.object) + length)
                        bad_line = total + int(np.count_nonzero(view[:at] == 10)) + 1
                total += int(np.count_nonzero(view == 10))
                last = int(view[-1])
                del view  # the buffer export must end before the window can close
    return total + (last != 10), bad_line


if __name__ == "__main__":
    lines, bad = scan(sys.argv[1])
    print(lines, bad if bad is not None else "-")
