"""Where things are: the shared data folder and atomic file writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def shared_data_dir() -> Path:
    """The real datasets: ``$KSEG_DATA`` if set, else ``../shared/data`` beside the checkout."""
    env = os.environ.get("KSEG_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    return here.parent / "shared" / "data"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A crash or an exception leaves any earlier file at ``path`` untouched and no partial file.

    Example:
        with atomic_path("out/grid.png") as tmp:
            cv2.imwrite(str(tmp), image)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
