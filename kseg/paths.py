"""Where things are: the shared data folder, atomic file writes, and writable output folders."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from kseg.errors import KsegError, raise_if_interrupted

# errno -> (what happened, in words): the write failures that are the machine's, not kseg's
WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "file too large for this file system",
}
_FIX = {
    errno.ENOSPC: "free some space or choose another",
    errno.EDQUOT: "free some space or choose another",
    errno.EFBIG: "choose another",
}


def shared_data_dir() -> Path:
    """The real datasets: ``$KSEG_DATA`` if set, else ``../shared/data`` beside the checkout."""
    env = os.environ.get("KSEG_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    return here.parent / "shared" / "data"


def write_errno(e: BaseException) -> int | None:
    """The errno of a failed write (``ENOSPC``, ``EROFS``, ...) in ``e`` or its causes, else ``None``.

    h5py, OpenCV and TensorFlow do not always keep ``errno``; their messages are read too.
    """
    words = {"no space left": errno.ENOSPC, "read-only file system": errno.EROFS,
             "permission denied": errno.EACCES, "quota exceeded": errno.EDQUOT}
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in WRITE_ERRORS:
            return e.errno
        text = str(e).lower()
        for w, code in words.items():
            if w in text:
                return code
        e = e.__cause__ or e.__context__
    return None


def write_failure(path, e: BaseException | int, option: str = "output folder") -> KsegError:
    """One line for a failed write of ``path``: what happened and what to do.

    Args:
        path: the file (or folder) that could not be written.
        e: the exception (or an errno).
        option: what the user chooses instead, e.g. ``"--out"``.

    Example:
        raise write_failure("exports/a.tflite", err, "--out")
        # cannot write exports/a.tflite (no space left on device): free some space or choose another --out
    """
    code = e if isinstance(e, int) else write_errno(e)
    what = WRITE_ERRORS.get(code) or (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
    return KsegError(f"cannot write {path} ({what}): {_FIX.get(code, 'choose another')} {option}")


def check_writable(folder, option: str = "--out") -> Path:
    """Make ``folder`` (and its parents) and prove a file can be written there, before any long work.

    Args:
        folder: the output folder.
        option: the command-line option that chose it (named in the error).

    Returns:
        The folder.

    Raises:
        KsegError: "cannot write to DIR (read-only file system): choose another --out".

    Example:
        check_writable("exports", "--out")
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".kseg-write-check.", dir=folder)
        try:
            os.write(fd, b"k")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        code = write_errno(e)
        what = WRITE_ERRORS.get(code) or (e.strerror or str(e)).lower()
        if isinstance(e, (FileExistsError, NotADirectoryError)):
            what = "a file of that name is in the way"
        fix = "free some space or choose another" if code in (errno.ENOSPC, errno.EDQUOT) else "choose another"
        raise KsegError(f"cannot write to {folder} ({what}): {fix} {option}") from None
    return folder


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None, fsync: bool = True, option: str = "output folder"):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary file is flushed to disk (``fsync``) before the rename, so a crash, a full
    disk or an interrupt leaves any earlier file at ``path`` untouched and no partial file. A
    write that fails for the machine's reasons (no space, read-only, permissions) becomes one
    ``KsegError`` line naming ``path``; so does a writer that reported success but left no
    bytes (``cv2.imwrite`` on a full disk).

    Args:
        path: the final file.
        suffix: the temporary file's suffix (default: ``path``'s, which some writers need).
        fsync: flush the file and its folder to disk before and after the rename.
        option: what the user chooses instead in the error (e.g. ``"--out"``).

    Example:
        with atomic_path("out/grid.png") as tmp:
            cv2.imwrite(str(tmp), image)
    """
    path = Path(path)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
    except OSError as e:
        raise write_failure(path, e, option) from None
    tmp = Path(tmp)
    try:
        try:
            yield tmp
        except KsegError:
            raise
        except Exception as e:
            if write_errno(e) is not None:
                raise write_failure(path, e, option) from None
            raise
        raise_if_interrupted()  # a Ctrl-C Python had to drop earlier: this output is not finished
        try:
            if not tmp.is_file() or tmp.stat().st_size == 0:
                raise KsegError(f"cannot write {path}: the writer left no data (a full disk?); "
                                f"check the free space or choose another {option}")
            if fsync:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(tmp, path)
            if fsync:
                _fsync_dir(path.parent)
        except OSError as e:
            raise write_failure(path, e, option) from None
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def staged_output(path: str | os.PathLike, option: str = "--out"):
    """Yield ``path`` inside a hidden staging folder beside it; move everything written there into
    place only when the block succeeds.

    For outputs that come in sets (a ``.tflite`` and its model card): the files are written and
    rewritten under their final names in ``.kseg-staging-*/`` (any existing card is copied in
    first), then each is renamed onto its target. A failure or an interrupt leaves the earlier
    files untouched and no partial ones.

    Example:
        with staged_output("exports/portrait.tflite") as out:
            write_tflite(out); write_card(out.with_suffix(".json"))
    """
    path = Path(path)
    folder = path.parent
    check_writable(folder, option)
    try:
        stage = Path(tempfile.mkdtemp(prefix=".kseg-staging-", dir=folder))
    except OSError as e:
        raise write_failure(folder, e, option) from None
    try:
        for sibling in (path.with_suffix(".json"),):
            if sibling.is_file():
                shutil.copy2(sibling, stage / sibling.name)
        try:
            yield stage / path.name
        except KsegError as e:  # name the real folder and option, not the staging one
            raise KsegError(str(e).replace(str(stage), str(folder)).replace("another output folder",
                                                                            f"another {option}")) from None
        except OSError as e:
            if write_errno(e) is not None:
                raise write_failure(path, e, option) from None
            raise
        raise_if_interrupted()
        try:
            staged = sorted(stage.iterdir(), key=lambda f: f.suffix != ".tflite")  # the model before its card
            for f in staged:
                fd = os.open(f, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            for f in staged:
                os.replace(f, folder / f.name)
            _fsync_dir(folder)
        except OSError as e:
            raise write_failure(path, e, option) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
