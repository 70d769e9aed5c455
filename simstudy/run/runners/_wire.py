"""Length-prefixed pickle frames between the process runner and its children."""

from __future__ import annotations

import array
import fcntl
import os
import pickle
import select
import struct
import termios
import time
from typing import Any

HEADER = struct.Struct("!Q")
PROTOCOL_LOST_EXIT_CODE = 70
"""Exit code of a model process whose reply pipe the model closed: it cannot say why."""


class WireTimeout(Exception):
    """No complete frame arrived before the deadline."""


class WireClosed(Exception):
    """The other side closed the pipe (it exited or crashed)."""


def write_frame(fd: int, message: Any) -> int:
    """Write one message to a file descriptor; return its size in bytes."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    data = memoryview(HEADER.pack(len(payload)) + payload)
    size = len(data)
    while data:
        written = os.write(fd, data)
        data = data[written:]
    return size


def unread_bytes(fd: int) -> int:
    """Return how many bytes written to a pipe (either end) nobody has read yet."""
    count = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, count, True)
    except OSError:
        return 0
    return count[0]


def read_frame(fd: int, deadline: float | None = None) -> Any:
    """Read one message, raising `WireTimeout` past `deadline` (a time.monotonic value)."""
    header = _read_exactly(fd, HEADER.size, deadline)
    (length,) = HEADER.unpack(header)
    return pickle.loads(_read_exactly(fd, length, deadline))


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WireTimeout()
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                raise WireTimeout()
        chunk = os.read(fd, min(size - len(chunks), 1 << 20))
        if not chunk:
            raise WireClosed()
        chunks += chunk
    return bytes(chunks)
