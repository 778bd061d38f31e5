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
