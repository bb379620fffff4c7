"""Atomic local file writes: a temporary file beside the target, fsynced, then renamed over it,
so a reader (another rank, a sensor, a resumed job) never sees half a file."""

from __future__ import annotations

import os
import tempfile
from typing import Union


def write_atomic(path: Union[str, os.PathLike], data: Union[str, bytes]) -> None:
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
