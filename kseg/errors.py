"""The one exception type a user sees.

Everything that is the user's to fix (a corrupt image, a mask of the wrong size, a missing
file, an unknown config key) raises ``KsegError`` with one line that names the thing and the
fix. The CLI prints that line and exits non-zero; it never shows a traceback for these.
"""


class KsegError(Exception):
    """A problem with the user's input, described in one actionable line."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped a command; the message says how to carry on.

    Example:
        raise Interrupted("run the same command to resume from epoch 3")
    """


# Ctrl-C that arrived where Python could not raise it (inside a ``__del__``, "Exception ignored
# in ..."): noted here, so that the next output about to be renamed into place is not.
_SWALLOWED: list[bool] = []


def note_swallowed_interrupt() -> None:
    """Record a KeyboardInterrupt that Python had to drop (``sys.unraisablehook``)."""
    _SWALLOWED.append(True)


def forget_swallowed_interrupts() -> None:
    """Start a new command with no dropped Ctrl-C on record."""
    _SWALLOWED.clear()


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if a Ctrl-C was dropped earlier in this process."""
    if _SWALLOWED:
        raise KeyboardInterrupt


def forget_escaped_interrupt() -> None:
    """Keep a command's exit status its own after it has handled a Ctrl-C.

    CPython ends a ``python -m`` run by killing itself with SIGINT (status -2, not the 130 or 0 the
    command returned) once a KeyboardInterrupt has escaped any ``PyRun_*`` call, even one caught
    later. TensorFlow, optree and LiteRT run code that way (pybind11 ``exec``/``eval``) while they
    import, so a Ctrl-C in the first seconds of ``kseg train`` turned "interrupted, exit 130" into a
    signal death. An empty ``PyRun_SimpleString`` clears that record; call it once the outcome is
    decided.
    """
    try:
        import ctypes

        ctypes.pythonapi.PyRun_SimpleString(b"")
    except Exception:  # not CPython: it keeps no such record
        pass


def is_interrupt(e: BaseException) -> bool:
    """Whether ``e`` is Ctrl-C: a ``KeyboardInterrupt``, or one TensorFlow/pybind11 wrapped in another error."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt) or "KeyboardInterrupt" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False
