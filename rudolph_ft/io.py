"""Small file helpers shared by model saving, caches and checkpoints."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(target: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `target`, then rename it over `target`.

    A crash or kill during `write` leaves any previous `target` untouched (rename is atomic on POSIX).
    """
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
