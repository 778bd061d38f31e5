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


def is_interrupt(e: BaseException) -> bool:
    """Whether ``e`` is Ctrl-C: a ``KeyboardInterrupt``, or one TensorFlow/pybind11 wrapped in another error."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt) or "KeyboardInterrupt" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False
