"""Frame sinks: an OpenCV window, a video file, a folder of PNGs, a virtual camera.

Every sink takes RGB uint8 frames in ``write`` and is finished by ``close``, or by ``abort``
when the run failed (the pipeline decides, in a ``finally``). Video files are written to a
temporary name beside the target, checked when finished and renamed on ``close``; ``abort``
removes them, so a broken or partial video never appears under the target's name.

Example:
    with VideoFileSink("demo_out/portrait.mp4", fps=30) as sink:
        sink.write(rgb)
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np

from kseg.errors import KsegError
from kseg.paths import atomic_path, check_writable, write_failure

FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class Sink:
    """Base class: ``write(rgb)``, ``close()``, context manager.

    Attributes:
        frames: frames written so far.
        closed_by_user: ``True`` once a window sink was closed by the user (the app stops).
    """

    name = "sink"
    closed_by_user = False

    def __init__(self):
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        """Take one RGB uint8 frame."""
        self.frames += 1

    def poll_key(self) -> int:
        """The key pressed since the last call (``-1`` if none); only windows have keys."""
        return -1

    def close(self) -> None:
        """Finish: finalize files, release devices. Safe to call twice."""

    def abort(self) -> None:
        """The run failed: release devices; a file sink leaves no partial file. Default: ``close``."""
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class NullSink(Sink):
    """Discards frames (benchmarks)."""

    name = "null"


class VideoFileSink(Sink):
    """A video file written with OpenCV (``.mp4``: MPEG-4 Part 2 ``mp4v``; ``.avi``: MJPG).

    The size is taken from the first frame. Frames go to a temporary file beside ``path``; on
    ``close`` the file is finalized, read back (it must open and hold every frame written: a
    full disk makes OpenCV drop frames or the ``.mp4`` index without saying so), flushed to disk
    and renamed onto ``path``. ``abort`` (a failed run) removes it instead. A run that wrote no
    frame leaves no file.

    Args:
        path: output file (``.mp4``, ``.avi``, ``.mkv``, ``.mov``).
        fps: frames per second written in the file.
        fourcc: a four-character codec code to override the default for the suffix.

    Raises:
        KsegError: unknown suffix, OpenCV cannot open an encoder for it, or (from ``close``) the
            finished file is not complete, named with the likely reason.
    """

    def __init__(self, path, fps: float = 30.0, fourcc: str | None = None):
        super().__init__()
        self.path = Path(path)
        self.name = str(self.path)
        suffix = self.path.suffix.lower()
        if fourcc is None and suffix not in FOURCC_BY_SUFFIX:
            raise KsegError(f"cannot write video {self.path}: unknown suffix {suffix!r}; use .mp4 or .avi")
        self.fourcc = fourcc or FOURCC_BY_SUFFIX[suffix]
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.written = False  # True once the finished file is at ``path``
        self._tmp = None
        self._writer = None
        self._bgr = None

    def _open(self, shape):
        import cv2

        folder = check_writable(self.path.parent, "--out")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".tmp{self.path.suffix}", dir=folder)
            os.close(fd)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the video normal permissions
        except OSError as e:
            raise write_failure(self.path, e, "--out") from None
        self._tmp = Path(tmp)
        h, w = shape
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (w, h))
        if not self._writer.isOpened():
            self._writer = None
            self._discard()
            raise KsegError(
                f"cannot write video {self.path}: OpenCV has no {self.fourcc!r} encoder here; "
                "use .mp4 (mp4v) or .avi (MJPG), or --frames DIR for PNGs"
            )
        self._bgr = np.empty((h, w, 3), np.uint8)

    def write(self, rgb):
        import cv2

        if self._writer is None:
            if self.frames:
                raise KsegError(f"{self.path} is already closed")
            self._open(rgb.shape[:2])
        if rgb.shape[:2] != self._bgr.shape[:2]:
            raise KsegError(
                f"frame {self.frames} is {rgb.shape[1]}×{rgb.shape[0]} but {self.path} was started at "
                f"{self._bgr.shape[1]}×{self._bgr.shape[0]}; a video keeps one size"
            )
        cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR, dst=self._bgr)
        self._writer.write(self._bgr)
        self.frames += 1

    def _discard(self):
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def _check(self) -> None:
        """The finished temporary file opens and holds every frame, or ``KsegError`` with the reason."""
        import cv2

        cap = cv2.VideoCapture(str(self._tmp))
        try:
            opened = cap.isOpened()
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if opened else 0
        finally:
            cap.release()
        if opened and count >= self.frames:
            return
        free = shutil.disk_usage(self._tmp.parent).free
        why = "no space left on device" if free < 4 * 2**20 else "the encoder could not write it"
        got = f"holds {count} of the {self.frames} frames" if opened else "does not open (not finalized)"
        fix = "free some space or choose another --out" if free < 4 * 2**20 else "choose another --out or --frames DIR"
        raise KsegError(f"cannot write video {self.path} ({why}: the file {got}); {fix}")

    def close(self):
        """Finalize, check, flush and rename the video into place (nothing when no frame was written)."""
        if self._writer is not None:
            self._writer.release()  # writes the container index
            self._writer = None
        if self._tmp is None:
            return
        try:
            if self.frames == 0:
                return
            self._check()
            try:
                fd = os.open(self._tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(self._tmp, self.path)
            except OSError as e:
                raise write_failure(self.path, e, "--out") from None
            self._tmp = None
            self.written = True
        finally:
            self._discard()

    def abort(self):
        """Stop without a file: the run failed, so a partial video never appears at ``path``."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._discard()


class FrameDirSink(Sink):
    """One PNG per frame: ``DIR/frame_000000.png``, ``frame_000001.png``, ...

    Args:
        folder: created if missing.
        every: keep one frame in ``every``.
    """

    def __init__(self, folder, every: int = 1):
        super().__init__()
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = f"{self.folder}/"
        self.every = max(1, int(every))
        self._seen = 0
        self._bgr = None

    def write(self, rgb):
        import cv2

        i = self._seen
        self._seen += 1
        if i % self.every:
            return
        if self._bgr is None or self._bgr.shape != rgb.shape:
            self._bgr = np.empty_like(rgb)
        cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR, dst=self._bgr)
        # each frame complete or absent; no fsync per frame (it would cost frames/s)
        with atomic_path(self.folder / f"frame_{self.frames:06d}.png", fsync=False, option="--frames") as tmp:
            cv2.imwrite(str(tmp), self._bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        self.frames += 1


def display_available() -> bool:
    """``True`` when a window can be shown: a display and an OpenCV built with a GUI backend."""
    import cv2

    if platform.system() == "Linux" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        info = cv2.getBuildInformation()
    except Exception:  # pragma: no cover
        return False
    for line in info.splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() not in ("NONE", "")
    return True


class WindowSink(Sink):
    """An OpenCV window (``cv2.imshow``) that also reads keys; closing it stops the app.

    Args:
        title: the window title.

    Raises:
        KsegError: no display, or OpenCV was built without a GUI (``opencv-python-headless``).
    """

    def __init__(self, title: str = "kseg"):
        import cv2

        super().__init__()
        self.title = title
        self.name = "window"
        if not display_available():
            raise KsegError(
                "no window can be shown (no display, or OpenCV is the headless build without a GUI: "
                "make opencv installs opencv-python); or write --out out.mp4 / --frames DIR"
            )
        try:
            # GUI_NORMAL: no toolbar or status bar (Qt's zoom/save buttons would cover the HUD's space)
            cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        except cv2.error as e:
            raise KsegError(f"cannot open a window: {str(e).strip().splitlines()[-1][:120]}; use --out out.mp4") from None
        self._bgr = None
        self._key = -1
        self._shown = False

    def write(self, rgb):
        import cv2

        if self._bgr is None or self._bgr.shape != rgb.shape:
            self._bgr = np.empty_like(rgb)
        cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR, dst=self._bgr)
        cv2.imshow(self.title, self._bgr)
        self._shown = True
        self._key = cv2.waitKey(1)
        self.frames += 1
        try:
            if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                self.closed_by_user = True
        except cv2.error:
            self.closed_by_user = True

    def poll_key(self):
        key, self._key = self._key, -1
        return key & 0xFF if key >= 0 else -1

    def close(self):
        import cv2

        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass


class VirtualCameraSink(Sink):
    """A virtual webcam (``pyvirtualcam``: v4l2loopback on Linux, OBS on Windows/macOS) for video calls.

    Args:
        fps: the rate announced to the virtual device.
        device: a device path such as ``/dev/video10`` (``None``: the first loopback device).

    Raises:
        KsegError: pyvirtualcam is not installed, or no virtual camera device exists.
    """

    def __init__(self, fps: float = 30.0, device: str | None = None):
        super().__init__()
        try:
            import pyvirtualcam  # noqa: F401
        except ImportError:
            raise KsegError(
                "--virtual-cam needs pyvirtualcam: pip install pyvirtualcam (and v4l2loopback on Linux)"
            ) from None
        self.fps = fps
        self.device = device
        self.name = "virtual camera"
        self._cam = None

    def write(self, rgb):
        import pyvirtualcam

        if self._cam is None:
            h, w = rgb.shape[:2]
            try:
                self._cam = pyvirtualcam.Camera(width=w, height=h, fps=self.fps, device=self.device)
            except Exception as e:
                msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
                raise KsegError(
                    f"no virtual camera device ({msg}); on Linux: sudo modprobe v4l2loopback devices=1"
                ) from None
            self.name = f"virtual camera {self._cam.device}"
        self._cam.send(rgb)
        self.frames += 1

    def close(self):
        if self._cam is not None:
            self._cam.close()
            self._cam = None
