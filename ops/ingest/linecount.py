"""Byte-level line count of a plain file, independent of any CSV parser (the row accounting's ground truth).

Run as a script (`python ops/ingest/linecount.py FILE`) it imports only the stdlib and numpy, so a child process
can count a multi-GB file on its own core while the parent parses other files. The file is mapped in 16 MB
windows and newlines are counted by numpy: ~3x less CPU than `bytes.count` over `read()` chunks (measured on a
3.4 GB file: 1.1 vs 3.3 CPU s), and each window is unmapped before the next, so the mapped pages never add up
in the process's RSS.
"""
from __future__ import annotations

import mmap
import os
import sys

import numpy as np

WINDOW = 16 << 20  # window offsets must be multiples of mmap.ALLOCATIONGRANULARITY (4 KiB Linux, 64 KiB Windows)


def count_lines(path: str | os.PathLike[str]) -> int:
    """Newline bytes in the file, plus one for a final line without its newline."""
    size = os.path.getsize(path)
    if size == 0:
        return 0
    total = 0
    with open(path, "rb") as fh:
        for offset in range(0, size, WINDOW):
            length = min(WINDOW, size - offset)
            with mmap.mmap(fh.fileno(), length, access=mmap.ACCESS_READ, offset=offset) as window:
                view = np.frombuffer(window, dtype=np.uint8)
                total += int(np.count_nonzero(view == 10))
                last = int(view[-1])
                del view  # the buffer export must end before the window can close
    return total + (last != 10)


if __name__ == "__main__":
    print(count_lines(sys.argv[1]))
