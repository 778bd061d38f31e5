"""Frame sources: a camera, a video file or a folder of images, all giving RGB uint8 frames.

BGR→RGB conversion happens here, once, at the boundary; everything downstream is RGB.
``read(out)`` fills a caller-owned buffer so that the hot loop allocates nothing.

Example:
    with open_source("assets/book.mkv", loop=True) as src:
        frame = np.empty(src.shape + (3,), np.uint8)
        while src.read(frame) is not None:
            ...
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from kseg.errors import KsegError

REPO = Path(__file__).resolve().parents[2]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def resolve(path) -> Path:
    """``path`` as given if it exists, else relative to the repository (for the defaults)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    alt = REPO / p
    return alt if alt.exists() else p


@contextlib.contextmanager
def _quiet_opencv():
    """OpenCV prints warnings to stderr when a camera or file does not open; we say it in one line."""
    import cv2

    try:
        logging = cv2.utils.logging
        level = logging.getLogLevel()
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    except AttributeError:  # pragma: no cover - older builds without cv2.utils.logging
        yield
        return
    try:
        yield
    finally:
        logging.setLogLevel(level)


class Source:
    """Base class of frame sources.

    Attributes:
        name: what the source is, for messages (``camera 0``, ``book.mkv``).
        shape: ``(H, W)`` of every frame it gives.
        fps: frames per second of the source (a camera's nominal rate; 30 when unknown).
        live: ``True`` for a camera (stale frames may be dropped), ``False`` for files.
        frame_count: frames in one pass (``None`` for a camera).
    """

    name = "source"
    live = False
    frame_count: int | None = None

    def __init__(self):
        self.shape = (0, 0)
        self.fps = 30.0

    def read(self, out: np.ndarray | None = None) -> np.ndarray | None:
        """The next RGB frame written into ``out`` (allocated if ``None``), or ``None`` at the end."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file."""

    def new_frame(self) -> np.ndarray:
        """A buffer of the right shape for ``read``."""
        return np.empty(self.shape + (3,), np.uint8)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame


class CameraSource(Source):
    """A webcam by index (``cv2.VideoCapture(index)``).

    Args:
        index: camera index (0 is the first camera).
        size: requested ``(W, H)``; the camera may pick the nearest mode it supports.
        fps: requested frame rate.

    Raises:
        KsegError: no camera at that index, or it gives no frame. A camera that stops
            delivering frames later (unplugged) raises ``KsegError`` from ``read``.
    """

    live = True

    def __init__(self, index: int = 0, size: tuple[int, int] | None = (640, 480), fps: float | None = None):
        import cv2

        super().__init__()
        self.index = int(index)
        self.name = f"camera {self.index}"
        with _quiet_opencv():
            self.cap = cv2.VideoCapture(self.index)
        if not self.cap.isOpened():
            self.cap.release()
            raise KsegError(
                f"no camera at index {self.index} (none found or it is in use); plug one in, try "
                "another --source index, or give a video file: --source assets/book.mkv"
            )
        if size:
            self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
            self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        if fps:
            self.cap.set(cv2.CAP_PROP_FPS, fps)
        self.cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of old ones
        ok, bgr = self.cap.read()
        if not ok or bgr is None:
            self.cap.release()
            raise KsegError(f"camera {self.index} opened but gives no frames; is another program using it?")
        self._bgr = bgr
        self.shape = bgr.shape[:2]
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0) or 30.0
        self._first = True

    def read(self, out=None):
        import cv2

        if self._first:  # the frame read while opening
            self._first = False
        else:
            ok, _ = self.cap.read(self._bgr)
            if not ok:
                raise KsegError(f"camera {self.index} stopped delivering frames (unplugged?); the output so far was saved")
        if out is None:
            out = self.new_frame()
        return cv2.cvtColor(self._bgr, cv2.COLOR_BGR2RGB, dst=out)

    def close(self):
        self.cap.release()


class VideoSource(Source):
    """A video file, optionally looped.

    Args:
        path: any file OpenCV's FFmpeg backend decodes (mp4, mkv, avi, ...).
        loop: start again at the end instead of ending.

    Raises:
        KsegError: missing file, or one OpenCV cannot decode.
    """

    def __init__(self, path, loop: bool = False):
        import cv2

        super().__init__()
        self.path = Path(path)
        self.name = self.path.name
        self.loop = loop
        if not self.path.is_file():
            raise KsegError(f"video {self.path} not found; give an existing file, a camera index or an image folder")
        self.cap = self._open()
        ok, bgr = self.cap.read()
        if not ok or bgr is None:
            self.cap.release()
            raise KsegError(f"cannot read a frame from {self.path}; is it a video OpenCV/FFmpeg can decode?")
        self._bgr = bgr
        self._pending = True
        self.shape = bgr.shape[:2]
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0) or 30.0
        n = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = n if n > 0 else None
        self.passes = 0

    def _open(self):
        import cv2

        with _quiet_opencv():
            cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise KsegError(f"cannot open video {self.path}; is it a video OpenCV/FFmpeg can decode?")
        return cap

    def read(self, out=None):
        import cv2

        if self._pending:
            self._pending = False
        else:
            ok, _ = self.cap.read(self._bgr)
            if not ok:
                self.passes += 1
                if not self.loop:
                    return None
                self.cap.release()  # reopening is more reliable than seeking in every container
                self.cap = self._open()
                ok, _ = self.cap.read(self._bgr)
                if not ok:
                    return None
        if out is None:
            out = self.new_frame()
        return cv2.cvtColor(self._bgr, cv2.COLOR_BGR2RGB, dst=out)

    def close(self):
        self.cap.release()


class ImageFolderSource(Source):
    """The images in a folder (sorted by name), each resized to the first one's size.

    Args:
        path: a folder of images, or one image file.
        loop: start again after the last image.
        fps: the rate to write them at in a video sink.

    Raises:
        KsegError: no images in the folder, or the first one cannot be read.
    """

    def __init__(self, path, loop: bool = False, fps: float = 10.0):
        super().__init__()
        self.path = Path(path)
        self.name = self.path.name
        self.loop = loop
        if self.path.is_dir():
            files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files = [self.path]
        if not files:
            raise KsegError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.path}")
        self.files = files
        first = self._load(files[0])
        self.shape = first.shape[:2]
        self.fps = float(fps)
        self.frame_count = len(files)
        self._i = 0

    @staticmethod
    def _load(path):
        import cv2

        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise KsegError(f"cannot read image {path}; is it a complete JPEG/PNG?")
        return bgr

    def read(self, out=None):
        import cv2

        if self._i >= len(self.files):
            if not self.loop:
                return None
            self._i = 0
        bgr = self._load(self.files[self._i])
        self._i += 1
        if bgr.shape[:2] != self.shape:
            bgr = cv2.resize(bgr, (self.shape[1], self.shape[0]), interpolation=cv2.INTER_AREA)
        if out is None:
            out = self.new_frame()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out)


class ArraySource(Source):
    """Frames from a list of RGB arrays (tests, benchmarks that preload a clip).

    Args:
        frames: sequence of ``(H, W, 3)`` uint8 RGB arrays, all the same size.
        loop: start again after the last frame.
        fps: the nominal rate.
        live: pretend to be a camera (stale frames may be dropped).
    """

    def __init__(self, frames, loop: bool = False, fps: float = 30.0, live: bool = False, name: str = "frames"):
        super().__init__()
        if len(frames) == 0:
            raise KsegError("ArraySource needs at least one frame")
        self.frames = list(frames)
        self.shape = self.frames[0].shape[:2]
        self.fps = float(fps)
        self.loop = loop
        self.live = live
        self.name = name
        self.frame_count = len(self.frames)
        self._i = 0

    def read(self, out=None):
        if self._i >= len(self.frames):
            if not self.loop:
                return None
            self._i = 0
        frame = self.frames[self._i]
        self._i += 1
        if out is None:
            return frame.copy()
        np.copyto(out, frame)
        return out


def open_source(spec, loop: bool = False, size: tuple[int, int] | None = None, fps: float | None = None) -> Source:
    """Open a camera index, a video file, an image folder or a single image.

    Args:
        spec: ``0``/``"0"`` (camera index), a video path, a folder of images or an image path.
        loop: loop files (ignored for cameras).
        size: requested camera ``(W, H)``.
        fps: requested camera rate, or the rate given to an image folder.

    Returns:
        A ``Source``.

    Raises:
        KsegError: the source does not exist or cannot be read, in one line.

    Example:
        src = open_source("0")               # first webcam
        src = open_source("assets/book.mkv", loop=True)
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        return CameraSource(int(spec), size=size or (640, 480), fps=fps)
    p = Path(spec)
    if p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES:
        if not p.exists():
            raise KsegError(f"image {p} not found; give an existing image, folder, video or camera index")
        return ImageFolderSource(p, loop=loop, fps=fps or 10.0)
    return VideoSource(p, loop=loop)
