"""Progress of long work: a bar on a terminal, a plain line now and then in a log.

On a terminal the bar is redrawn in place (at most ten times a second)::

    calibration [##########----------]  50/100 images  12.3 s, eta 12 s

Anywhere else (a log file, CI, a pipe) a bar would be hundreds of carriage returns, so one plain
line is written every ``every`` seconds, and one at the end::

    calibration: 50/100 images (50%), 12.3 s, eta 12 s
    calibration: 100/100 images in 24.1 s

``KSEG_PROGRESS`` chooses for every bar at once: ``off`` (or ``0``), ``lines`` or ``bar``;
``KSEG_PROGRESS_EVERY`` sets the seconds between two plain lines.

Keras prints its own progress during ``fit``: ``fit_verbose`` picks its ``verbose`` (a bar on a
terminal, a line per epoch otherwise) and ``step_lines_callback`` adds the plain lines within
long epochs.

Example:
    for image in progress(images, "parity", "images"):
        ...
    with Progress(total=len(images), label="calibration", unit="images") as bar:
        for image in images:
            bar.update()
"""

from __future__ import annotations

import os
import sys
import time

MODES = ("bar", "lines", "off")
REDRAW_S = 0.1  # the bar is redrawn at most this often


def _now() -> float:
    return time.monotonic()


def format_seconds(s: float) -> str:
    """``12.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if s < 60:
        return f"{s:.1f} s"
    s = int(round(s))
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _every(default: float) -> float:
    try:
        return max(0.0, float(os.environ["KSEG_PROGRESS_EVERY"]))
    except (KeyError, ValueError):
        return default


def _mode(stream, mode: str | None) -> str:
    env = os.environ.get("KSEG_PROGRESS", "").strip().lower()
    if env in ("0", "off", "false", "no"):
        return "off"
    if env in ("bar", "lines"):
        return env
    if mode is not None:
        return mode
    isatty = getattr(stream, "isatty", None)
    try:
        return "bar" if isatty is not None and isatty() else "lines"
    except ValueError:  # a closed stream
        return "off"


class Progress:
    """Progress of ``total`` units of work: a bar on a terminal, plain lines otherwise.

    Args:
        total: the units of work (``None``: unknown; counts and rate are shown).
        label: what is being done (``"calibration"``).
        unit: what is counted (``"images"``, ``"steps"``).
        stream: where to write (default ``sys.stderr``, looked up when created).
        every: seconds between two plain lines (default: ``KSEG_PROGRESS_EVERY`` or 10).
        mode: ``"bar"``, ``"lines"`` or ``"off"``; default: ``"bar"`` when ``stream`` is a
            terminal, else ``"lines"``. ``KSEG_PROGRESS`` overrides it.
        summary: write a last line (``label: N/N units in 12.3 s``) when done; on a terminal
            the bar stays instead.

    Example:
        with Progress(len(ids), "evaluation", "images") as bar:
            for i in ids:
                ...
                bar.update()
    """

    def __init__(self, total: int | None = None, label: str = "", unit: str = "", *, stream=None,
                 every: float | None = None, mode: str | None = None, summary: bool = True):
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode={mode!r}: use one of {', '.join(MODES)}")
        self.total = int(total) if total is not None else None
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.every = _every(10.0) if every is None else float(every)
        self.mode = _mode(self.stream, mode)
        self.summary = summary
        self.done = 0
        self.fields: dict = {}
        self.t0 = _now()
        self._last = self.t0  # the last line or redraw
        self._width = 0
        self._drawn = None  # the count the bar shows
        self._closed = False

    # ------------------------------------------------------------------ counting

    def update(self, n: int = 1, **fields) -> None:
        """``n`` more units done; ``fields`` (e.g. ``loss=0.41``) are shown after the counts."""
        self.set(self.done + n, **fields)

    def set(self, done: int, **fields) -> None:
        """``done`` units done so far."""
        self.done = int(done)
        if self.total is not None and self.done > self.total:
            self.total = None  # the total was an estimate: from now on counts and rate
        self.fields.update(fields)
        if self.mode == "off" or self._closed:
            return
        now = _now()
        if self.mode == "bar":
            if now - self._last >= REDRAW_S or self.done == self.total:
                self._last = now
                self._draw()
        elif now - self._last >= self.every and (self.total is None or self.done < self.total):
            self._last = now
            self._write(self.line() + "\n")

    def due(self) -> bool:
        """Whether the next ``set`` would write (so a caller can skip computing costly fields)."""
        if self.mode == "off" or self._closed:
            return False
        return _now() - self._last >= (REDRAW_S if self.mode == "bar" else self.every)

    def close(self, failed: bool = False) -> None:
        """Finish: the summary line (lines), the final bar and a new line (bar). Safe to call twice."""
        if self._closed or self.mode == "off":
            self._closed = True
            return
        self._closed = True
        if self.mode == "bar":
            if not failed and self._drawn != self.done:
                self._draw()
            if self._width:
                self._write("\n")
        elif self.summary and not failed:
            self._write(self.final_line() + "\n")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(failed=exc_type is not None)

    # ------------------------------------------------------------------ text

    def _counts(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.done}/{self.total}{unit}" if self.total is not None else f"{self.done}{unit}"

    def _times(self) -> str:
        elapsed = _now() - self.t0
        out = format_seconds(elapsed)
        if self.total and 0 < self.done < self.total:
            out += f", eta {format_seconds(elapsed / self.done * (self.total - self.done))}"
        elif self.total is None and elapsed > 0 and self.done:
            out += f", {self.done / elapsed:.3g}/s"
        return out

    def _fields(self) -> str:
        parts = []
        for k, v in self.fields.items():
            parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
        return ", " + ", ".join(parts) if parts else ""

    def line(self) -> str:
        """The plain line for now: ``label: 50/100 images (50%), 12.3 s, eta 12 s``."""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        head = f"{self.label}: " if self.label else ""
        return f"{head}{self._counts()}{pct}, {self._times()}{self._fields()}"

    def final_line(self) -> str:
        """The last plain line: ``label: 100/100 images in 24.1 s`` (``label: 20 images ...`` when
        the work ended before the expected total)."""
        head = f"{self.label}: " if self.label else ""
        counts = self._counts() if self.done == self.total else f"{self.done}{' ' + self.unit if self.unit else ''}"
        return f"{head}{counts} in {format_seconds(_now() - self.t0)}{self._fields()}"

    def _draw(self) -> None:
        if self.total:
            filled = min(20, int(20 * self.done / self.total))
            bar = f"[{'#' * filled}{'-' * (20 - filled)}] "
        else:
            bar = ""
        text = f"{self.label} {bar}{self._counts()}  {self._times()}{self._fields()}".strip()
        pad = " " * max(0, self._width - len(text))  # wipe the end of a longer previous line
        self._width = len(text)
        self._drawn = self.done
        self._write(f"\r{text}{pad}")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream must not stop the work
            self.mode = "off"


def progress(iterable, label: str = "", unit: str = "", total: int | None = None, **kwargs):
    """Yield the items of ``iterable`` while showing a ``Progress`` of them.

    Args:
        iterable: the work items.
        label, unit: as for ``Progress``.
        total: the number of items (default ``len(iterable)`` when it has one).
        **kwargs: passed to ``Progress`` (``stream``, ``every``, ``mode``, ``summary``).

    Example:
        for path in progress(paths, "evaluation", "images"):
            ...
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    bar = Progress(total, label, unit, **kwargs)
    failed = True
    try:
        for item in iterable:
            yield item
            bar.update()
        failed = False
    finally:
        bar.close(failed=failed)


# --------------------------------------------------------------------------------------
# Keras fit


def fit_verbose(verbose, stream=None) -> int:
    """Keras ``fit``'s ``verbose`` for kseg's ``verbose`` setting.

    ``"auto"``: 1 (Keras' bar) when ``stream`` (default ``sys.stdout``, where Keras writes) is a
    terminal, else 2 (a line per epoch: on Linux Keras draws its bar with backspaces even into
    a file, a line for every step). ``KSEG_PROGRESS`` (``off``/``lines``/``bar``) decides as for
    ``Progress``. Numbers are returned as they are.
    """
    if verbose != "auto":
        return int(verbose)
    mode = _mode(stream if stream is not None else sys.stdout, None)
    return {"bar": 1, "lines": 2, "off": 0}[mode]


def step_lines_callback(callback_base, every: float | None = None, stream=None):
    """A Keras callback writing a plain line every ``every`` seconds within each training epoch.

    With ``verbose=2`` Keras writes one line per epoch, which can be many minutes apart; these
    lines say how far the epoch is (``epoch 3/20: 140/400 steps (35%), 1 min 02 s, eta 1 min
    55 s, loss 0.412``). Keras' own epoch line ends each epoch, so there is no summary line.

    Args:
        callback_base: ``keras.callbacks.Callback`` (Keras 3) or ``tf_keras.callbacks.Callback``
            (the QAT model): the base layer imports neither.
        every: seconds between two lines (default: ``KSEG_PROGRESS_EVERY`` or 30).
        stream: where to write (default ``sys.stdout``, beside Keras' epoch lines).

    Example:
        model.fit(ds, epochs=5, verbose=2, callbacks=[step_lines_callback(keras.callbacks.Callback)])
    """

    class StepLines(callback_base):
        def __init__(self):
            super().__init__()
            self._bar = None
            self._last_steps = None  # a dataset of unknown length: the previous epoch's count

        def on_epoch_begin(self, epoch, logs=None):
            params = getattr(self, "params", None) or {}
            epochs = params.get("epochs")
            label = f"epoch {epoch + 1}/{epochs}" if epochs else f"epoch {epoch + 1}"
            total = params.get("steps") or self._last_steps
            self._bar = Progress(total, label, "steps", every=_every(30.0) if every is None else every,
                                 mode="lines", summary=False,
                                 stream=stream if stream is not None else sys.stdout)

        def on_train_batch_end(self, batch, logs=None):
            if self._bar is None:
                return
            fields = {}
            loss = (logs or {}).get("loss") if self._bar.due() else None  # float() waits for the step
            if loss is not None:
                try:
                    fields["loss"] = float(loss)
                except (TypeError, ValueError):
                    pass
            self._bar.set(batch + 1, **fields)

        def on_epoch_end(self, epoch, logs=None):
            if self._bar is not None:
                self._last_steps = self._bar.done or None
                self._bar.close()
                self._bar = None

    return StepLines()
