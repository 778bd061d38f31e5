"""kseg.progress: plain lines in a log, a bar on a terminal, nothing when switched off."""

from __future__ import annotations

import io

import pytest

from kseg import progress as kp


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(kp, "_now", c)
    monkeypatch.delenv("KSEG_PROGRESS", raising=False)
    return c


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_not_a_terminal_gives_a_plain_line_every_period_and_one_at_the_end(clock):
    out = io.StringIO()  # isatty() is False: a log
    bar = kp.Progress(100, "calibration", "images", stream=out, every=10)
    assert bar.mode == "lines"
    for i in range(100):
        clock.t += 0.25  # 4 images a second: 25 s in all
        bar.update()
    bar.close()
    assert out.getvalue().splitlines() == [
        "calibration: 40/100 images (40%), 10.0 s, eta 15.0 s",
        "calibration: 80/100 images (80%), 20.0 s, eta 5.0 s",
        "calibration: 100/100 images in 25.0 s",
    ]
    assert "\r" not in out.getvalue()


def test_a_terminal_gets_one_bar_redrawn_in_place(clock):
    out = Terminal()
    with kp.Progress(4, "parity", "images", stream=out) as bar:
        assert bar.mode == "bar"
        for _ in range(4):
            clock.t += 1.0
            bar.update(loss=0.123456)
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1 and text.count("\r") == 4
    # the last drawing is shorter than the one before (no eta): spaces wipe the rest of that
    assert text.split("\r")[-1].rstrip("\n").rstrip(" ") == "parity [####################] 4/4 images  4.0 s, loss 0.1235"
    assert text.split("\r")[2].startswith("parity [##########----------] 2/4 images  2.0 s, eta 2.0 s")


def test_bar_redraws_at_most_ten_times_a_second(clock):
    out = Terminal()
    bar = kp.Progress(1000, "x", stream=out)
    for _ in range(999):
        clock.t += 0.001  # 1 ms per item: about one redraw in a hundred
        bar.update()
    assert 8 <= out.getvalue().count("\r") <= 11


def test_unknown_total_shows_count_and_rate(clock):
    out = io.StringIO()
    bar = kp.Progress(None, "composites", stream=out, every=5)
    for _ in range(12):
        clock.t += 0.5
        bar.update()
    bar.close()
    assert out.getvalue().splitlines() == ["composites: 10, 5.0 s, 2/s", "composites: 12 in 6.0 s"]


def test_off_by_environment_and_no_summary_after_a_failure(clock, monkeypatch):
    out = io.StringIO()
    monkeypatch.setenv("KSEG_PROGRESS", "off")
    with kp.Progress(3, "x", stream=Terminal()) as bar:
        bar.update(3)
    assert bar.mode == "off"
    monkeypatch.setenv("KSEG_PROGRESS", "lines")
    assert kp.Progress(3, stream=Terminal()).mode == "lines"
    monkeypatch.delenv("KSEG_PROGRESS")
    with pytest.raises(RuntimeError):
        with kp.Progress(3, "x", stream=out) as bar:
            bar.update()
            raise RuntimeError
    assert out.getvalue() == ""  # the error says what happened; no "3/3 done"


def test_a_total_that_was_only_an_estimate(clock):
    out = io.StringIO()
    with kp.Progress(100, "calibration", "images", stream=out) as bar:  # at most 100
        bar.update(20)
    with kp.Progress(2, "calibration", "images", stream=out) as bar:  # 2 batches, counted in images
        bar.update(16)
    assert out.getvalue().splitlines() == ["calibration: 20 images in 0.0 s", "calibration: 16 images in 0.0 s"]


def test_progress_wraps_an_iterable(clock):
    out = io.StringIO()
    seen = []
    for x in kp.progress(["a", "b", "c"], "parity", "images", stream=out):
        clock.t += 2.0
        seen.append(x)
    assert seen == ["a", "b", "c"]
    assert out.getvalue() == "parity: 3/3 images in 6.0 s\n"


def test_format_seconds():
    assert [kp.format_seconds(s) for s in (3.21, 59.9, 65, 3599, 7380)] == [
        "3.2 s", "59.9 s", "1 min 05 s", "59 min 59 s", "2 h 03 min"]


def test_fit_verbose_is_a_bar_on_a_terminal_and_epoch_lines_in_a_log(monkeypatch):
    monkeypatch.delenv("KSEG_PROGRESS", raising=False)
    assert kp.fit_verbose("auto", Terminal()) == 1
    assert kp.fit_verbose("auto", io.StringIO()) == 2
    assert kp.fit_verbose(0, Terminal()) == 0 and kp.fit_verbose(2, Terminal()) == 2
    monkeypatch.setenv("KSEG_PROGRESS", "off")
    assert kp.fit_verbose("auto", Terminal()) == 0


def test_step_lines_callback_writes_lines_within_an_epoch(clock):
    class Base:  # stands in for keras.callbacks.Callback
        def __init__(self):
            self.params = {}

    out = io.StringIO()
    cb = kp.step_lines_callback(Base, every=30, stream=out)
    cb.params = {"epochs": 20, "steps": 400}
    cb.on_epoch_begin(2)
    for step in range(400):
        clock.t += 0.25  # 100 s an epoch
        cb.on_train_batch_end(step, {"loss": 0.5 - step / 1000})
    cb.on_epoch_end(2)
    assert out.getvalue().splitlines() == [
        "epoch 3/20: 120/400 steps (30%), 30.0 s, eta 1 min 10 s, loss 0.381",
        "epoch 3/20: 240/400 steps (60%), 1 min 00 s, eta 40.0 s, loss 0.261",
        "epoch 3/20: 360/400 steps (90%), 1 min 30 s, eta 10.0 s, loss 0.141",
    ]  # Keras' own line (verbose=2) ends the epoch


def test_step_lines_callback_takes_an_unknown_length_from_the_first_epoch(clock):
    class Base:
        def __init__(self):
            self.params = {}

    out = io.StringIO()
    cb = kp.step_lines_callback(Base, every=30, stream=out)
    cb.params = {"epochs": 2, "steps": None}  # tf.data of unknown cardinality
    for epoch in range(2):
        cb.on_epoch_begin(epoch)
        for step in range(200):
            clock.t += 0.25  # 50 s an epoch
            cb.on_train_batch_end(step, {})
        cb.on_epoch_end(epoch)
    assert out.getvalue().splitlines() == [
        "epoch 1/2: 120 steps, 30.0 s, 4/s",  # the first pass: counts and rate
        "epoch 2/2: 120/200 steps (60%), 30.0 s, eta 20.0 s",  # then the first pass's length
    ]
