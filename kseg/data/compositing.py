"""People pasted onto person-free backgrounds, with exact masks ("Simple Copy-Paste").

Pure numpy/OpenCV functions: ``cut_person`` takes a person out of a photo (pixels plus the
labels that travel with them: 1 for a person, parsing groups, or 255 for "person, part
unknown"), ``composite`` pastes one or more cut-outs onto a background at webcam framing
(head-and-shoulders, off-centre, partly out of frame) or full-body framing, later people in
front of earlier ones, and returns the image with its class labels and instance map.

Masks stay exact: every labelled pixel shows the pixels of the person it is labelled with.
Resizing a cut-out interpolates colours premultiplied by the person's alpha, so no pixel of the
photo it came from leaks into its edge; its mask is that alpha thresholded at 0.5 and its labels
are nearest-neighbour. Harmonisation (colour and blur matched to the background, edge softening,
noise, JPEG quality) changes the image only, and draws from its own random generator, so a
composite has the same labels with and without it.

The dataset format built on this (cache, sources, splits) is ``kseg.data.readers.composite``.

Example:
    rng = np.random.default_rng(0)
    person = cut_person(photo, (mask > 0).astype(np.uint8))
    comp = composite(background, [person], (256, 256), rng, framing="webcam")
    comp.image, comp.labels, comp.instances  # (256, 256, 3), (256, 256), (256, 256)

Reference:
    Ghiasi et al., "Simple Copy-Paste is a Strong Data Augmentation Method for Instance
    Segmentation", CVPR 2021.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

IGNORE = 255

# visible height of a person as a share of the frame height, by framing
# (far: people in a scene, as COCO shows them: the 741 person boxes of the shared COCO subsets,
# letterboxed, have a median height of 12% of the frame, a quarter under 6% and 64% under 20%;
# drawn log-uniformly, so small people are as common as large ones)
HEIGHTS = {"webcam": (0.4, 1.2), "full": (0.2, 0.9), "far": (0.05, 0.35)}
# webcam framing of a person whose photo shows them whole: keep the top 25-55% (head and
# shoulders down to about the waist)
HEAD_AND_SHOULDERS = (0.25, 0.55)
FRAMINGS = ("webcam", "full", "far")


@dataclass
class Cutout:
    """A person cut out of a photo.

    Attributes:
        image: ``(h, w, 3)`` uint8 RGB, the person's box in its photo (pixels outside the
            person are never pasted).
        labels: ``(h, w)`` uint8; 0 outside the person, its class id inside (1 for a person,
            a parsing group, or 255 for a person pixel whose part is unknown).
        cut: ``(top, bottom, left, right)``: where the photo's border cuts the person; such a
            side is pasted at or beyond the frame's border, never inside the frame.
        name: where it came from (file name, annotation id), for the composite's record.
    """

    image: np.ndarray
    labels: np.ndarray
    cut: tuple = (False, False, False, False)
    name: str = ""

    @property
    def alpha(self) -> np.ndarray:
        return self.labels != 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape


@dataclass
class Composite:
    """A composite image with exact labels.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        labels: ``(H, W)`` uint8 class ids (0 background, 255 ignore).
        instances: ``(H, W)`` uint8; 0 background, ``k`` the k-th person of ``people``.
        people: one dict per pasted person: ``name``, ``box`` (x1, y1, x2, y2 of its visible
            pixels), ``pasted`` (pixels in frame when pasted), ``visible`` (pixels it keeps).
        framing: ``"webcam"`` or ``"full"``.
        jpeg_quality: the quality to encode the image at (the last step of harmonisation), or
            ``None`` without harmonisation.
        background: where the background came from (set by the caller, for the record).
    """

    image: np.ndarray
    labels: np.ndarray
    instances: np.ndarray
    people: list = field(default_factory=list)
    framing: str = "webcam"
    jpeg_quality: int | None = None
    background: str = ""


# --------------------------------------------------------------------------------------
# cut-outs


def _trim(image, labels, cut) -> Cutout | None:
    """Crop to the labels' box; a side keeps its ``cut`` flag only if the box still reaches it."""
    ys = np.flatnonzero(labels.any(axis=1))
    xs = np.flatnonzero(labels.any(axis=0))
    if not len(ys):
        return None
    h, w = labels.shape
    y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    flags = (cut[0] and y0 == 0, cut[1] and y1 == h, cut[2] and x0 == 0, cut[3] and x1 == w)
    return Cutout(image[y0:y1, x0:x1], labels[y0:y1, x0:x1], flags)


def cut_person(image, labels, name: str = "") -> Cutout | None:
    """Cut the person (``labels != 0``) out of a photo.

    Args:
        image: ``(H, W, 3)`` uint8 RGB photo.
        labels: ``(H, W)`` uint8; 0 not this person, else the label each pixel carries.
        name: provenance for the record.

    Returns:
        A ``Cutout`` cropped to the person's box with ``cut`` flags for the photo borders it
        touches, or ``None`` if there is no person pixel.

    Example:
        cut = cut_person(rgb, (mask == 1).astype(np.uint8))
    """
    image, labels = np.asarray(image), np.asarray(labels, np.uint8)
    if image.shape[:2] != labels.shape:
        raise ValueError(f"labels {labels.shape} do not match the image {image.shape[:2]}")
    c = _trim(image, labels, (True, True, True, True))
    return None if c is None else replace(c, image=c.image.copy(), labels=c.labels.copy(), name=name)


def head_and_shoulders(cut: Cutout, fraction: float) -> Cutout | None:
    """The top ``fraction`` of a person (webcam framing); its bottom becomes a cut side."""
    h = cut.shape[0]
    rows = max(1, int(round(h * fraction)))
    if rows >= h:
        return cut
    c = _trim(cut.image[:rows], cut.labels[:rows], (cut.cut[0], True, cut.cut[2], cut.cut[3]))
    return None if c is None else replace(c, name=cut.name)


def flip(cut: Cutout) -> Cutout:
    """Mirror left-right (the cut flags swap sides)."""
    t, b, l, r = cut.cut
    return replace(cut, image=cut.image[:, ::-1], labels=cut.labels[:, ::-1], cut=(t, b, r, l))


def resize_cutout(cut: Cutout, scale: float) -> Cutout | None:
    """Scale a cut-out, keeping its mask exact and its edge free of the photo's background.

    Colours are resized premultiplied by the person's alpha and divided back, so an edge pixel
    is a mix of person pixels only; the mask is the resized alpha ≥ 0.5; labels are
    nearest-neighbour, and a mask pixel that the nearest sample left unlabelled takes its
    nearest person label.

    Returns:
        The scaled ``Cutout`` (outside the mask: labels 0, image 0), or ``None`` if nothing
        of the person is left.
    """
    import cv2

    h, w = cut.shape
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    if (nh, nw) == (h, w):
        return replace(cut, image=np.where(cut.alpha[..., None], cut.image, 0).astype(np.uint8))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    a = cut.alpha.astype(np.float32)
    a2 = cv2.resize(a, (nw, nh), interpolation=interp)
    pm = cv2.resize(cut.image.astype(np.float32) * a[..., None], (nw, nh), interpolation=interp)
    keep = a2 >= 0.5
    if not keep.any():
        return None
    colour = pm.reshape(nh, nw, 3) / np.maximum(a2, 1e-6)[..., None]
    image = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    image[~keep] = 0
    lab = cv2.resize(cut.labels, (nw, nh), interpolation=cv2.INTER_NEAREST)
    hole = keep & (lab == 0)
    if hole.any():
        if not (lab != 0).any():
            lab = np.full_like(lab, np.bincount(cut.labels[cut.alpha]).argmax())
        else:
            from scipy.ndimage import distance_transform_edt

            iy, ix = distance_transform_edt(lab == 0, return_distances=False, return_indices=True)
            lab = np.where(hole, lab[iy, ix], lab)
    lab = np.where(keep, lab, 0).astype(np.uint8)
    return Cutout(image, lab, cut.cut, cut.name)


# --------------------------------------------------------------------------------------
# layout


def crop_background(image, size, rng) -> np.ndarray:
    """A random crop of ``size`` ``(H, W)``'s aspect (50-100% of the largest such area), resized, maybe mirrored."""
    import cv2

    H, W = size
    h, w = image.shape[:2]
    if w * H >= h * W:
        ch, cw = h, h * W / H
    else:
        ch, cw = w * H / W, w
    s = np.sqrt(rng.uniform(0.5, 1.0))
    ch, cw = max(1, int(ch * s)), max(1, int(cw * s))
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    crop = image[y0:y0 + ch, x0:x0 + cw]
    out = cv2.resize(crop, (W, H), interpolation=cv2.INTER_AREA if ch > H else cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def _range(lo, hi, rng):
    return lo if hi <= lo else rng.uniform(lo, hi)


def position(shape, cut, size, framing, rng) -> tuple[int, int] | None:
    """Top-left ``(y0, x0)`` of a scaled cut-out in the frame, or ``None`` if its cut sides cannot
    all be placed at or beyond the frame's border.

    Webcam framing puts the person's (cut) bottom at or below the frame's bottom with the head
    near the top; full framing puts the feet in the lower half; far framing stands people on a
    ground plane (feet at 30-100% of the frame's height, higher the smaller the person, ±10%).
    Horizontally the person may stand off-centre and a quarter out of frame; a side cut in its
    photo lies beyond the border.
    """
    h, w = shape
    H, W = size
    top, bottom, left, right = cut
    # horizontal: at most a quarter out of frame, cut sides beyond the border
    lo, hi = -0.25 * w, W - 0.75 * w
    if left:
        hi = min(hi, 0.0)
        lo = min(lo, hi)
    if right:
        lo = max(lo, W - w)
        hi = max(hi, lo)
    if left and right and w < W:
        return None
    x0 = _range(lo, hi, rng)
    # vertical
    if bottom and top and h < H:
        return None
    if bottom:                          # the cut bottom at or below the frame's bottom
        lo = H - h
        hi = lo + 0.15 * h
        if top:                         # cut at the top too: that cut at the frame's top, little more lost
            lo, hi = max(lo, -0.05 * h), 0.0
        else:                           # a person taller than the frame: the head near the top
            lo = max(lo, -0.1 * H)
        if framing == "webcam":
            hi = min(hi, 0.6 * H)
        hi = max(hi, lo)
    else:
        if framing == "webcam":         # a whole person at webcam scale: the head near the top
            lo, hi = -0.05 * H, 0.3 * H
        elif framing == "far":          # feet on a ground plane: a smaller person stands farther up
            lo_h, hi_h = HEIGHTS["far"]
            t = np.clip((np.log(max(h / H, lo_h)) - np.log(lo_h)) / (np.log(hi_h) - np.log(lo_h)), 0.0, 1.0)
            feet = H * (0.3 + 0.7 * t)
            lo, hi = max(feet - 0.1 * H, 0.3 * H) - h, min(feet + 0.1 * H, 1.0 * H) - h
            lo = max(lo, -0.05 * h)
            hi = max(hi, lo)
        else:                           # feet in the lower half, the head (nearly) in frame
            lo, hi = max(0.5 * H - h, -0.05 * h), 1.05 * H - h
            hi = max(hi, lo)
        if top:
            lo, hi = -0.05 * h, 0.0
    y0, x0 = int(round(_range(lo, hi, rng))), int(round(x0))
    # rounding must not pull a cut side into the frame
    y0 = max(y0, H - h) if bottom else y0
    y0 = min(y0, 0) if top else y0
    x0 = min(x0, 0) if left else x0
    x0 = max(x0, W - w) if right else x0
    return y0, x0


# --------------------------------------------------------------------------------------
# harmonisation (image only)


def _lab(rgb):
    import cv2

    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _rgb(lab):
    import cv2

    return np.clip(cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB) * 255.0, 0, 255)


def _sharpness(grey, where=None) -> float:
    import cv2

    lap = np.abs(cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F))
    vals = lap[where] if where is not None else lap
    return float(vals.mean()) if vals.size else 0.0


def background_stats(image) -> dict:
    """What harmonisation matches a person to: LAB mean and spread, and sharpness (mean |Laplacian|)."""
    import cv2

    lab = _lab(image).reshape(-1, 3)
    return {"lab_mean": lab.mean(0), "lab_std": lab.std(0) + 1e-3,
            "sharpness": _sharpness(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY))}


def match_colour(cut: Cutout, stats: dict, strength: float) -> Cutout:
    """Move the person's LAB mean (and lightness spread) part of the way to the background's.

    Args:
        cut: the person.
        stats: ``background_stats`` of the background.
        strength: 0 leaves the person as is; 1 matches the lightness mean and spread fully and
            moves the colour (a, b) means halfway.
    """
    if strength <= 0:
        return cut
    m = cut.alpha
    px = _lab(cut.image[m][:, None, :])[:, 0, :]  # the person's pixels only
    mp, sp = px.mean(0), px.std(0) + 1e-3
    mb, sb = stats["lab_mean"], stats["lab_std"]
    out = px.copy()
    out[:, 0] = np.clip((px[:, 0] - mp[0]) * (sb[0] / sp[0]) ** (0.5 * strength) + mp[0] + strength * (mb[0] - mp[0]), 0, 100)
    out[:, 1:] = px[:, 1:] + 0.5 * strength * (mb[1:] - mp[1:])
    image = np.zeros_like(cut.image)
    image[m] = np.rint(_rgb(out[:, None, :])[:, 0, :]).astype(np.uint8)
    return replace(cut, image=image)


def match_blur(cut: Cutout, stats: dict, rng) -> Cutout:
    """Blur a person that is sharper than the background (Gaussian, within its mask only).

    Args:
        cut: the person.
        stats: ``background_stats`` of the background.
        rng: varies the blur by ±25%.
    """
    import cv2

    m = cut.alpha
    inner = cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if inner.sum() < 16:
        return cut
    grey = cv2.cvtColor(cut.image, cv2.COLOR_RGB2GRAY)
    ratio = _sharpness(grey, inner) / max(stats["sharpness"], 1e-3)
    if ratio < 1.3:
        return cut
    sigma = float(np.clip(0.6 * np.log2(ratio), 0.3, 1.5) * rng.uniform(0.75, 1.25))
    a = m.astype(np.float32)
    num = cv2.GaussianBlur(cut.image.astype(np.float32) * a[..., None], (0, 0), sigma)
    den = cv2.GaussianBlur(a, (0, 0), sigma)
    blurred = num / np.maximum(den, 1e-6)[..., None]
    image = np.where(m[..., None], np.clip(np.rint(blurred), 0, 255), 0).astype(np.uint8)
    return replace(cut, image=image)


def soften_edges(image, instances, rng) -> np.ndarray:
    """Blend a thin band along every boundary between people and background with a 3×3 blur
    (a pasted edge is otherwise sharper than a photographed one)."""
    import cv2

    k = np.ones((3, 3), np.uint8)
    band = cv2.dilate(instances, k) != cv2.erode(instances, k)
    if not band.any():
        return image
    w = rng.uniform(0.5, 1.0)
    blurred = cv2.GaussianBlur(image.astype(np.float32), (3, 3), 0.8)
    out = image.astype(np.float32)
    out[band] = (1 - w) * out[band] + w * blurred[band]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def add_noise(image, rng) -> np.ndarray:
    """Gaussian sensor noise, sigma 1-5 grey levels, on 60% of images."""
    if rng.random() >= 0.6:
        return image
    sigma = rng.uniform(1.0, 5.0)
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def encode_jpeg(image, quality: int) -> bytes:
    """RGB uint8 → JPEG bytes at ``quality``."""
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


# --------------------------------------------------------------------------------------
# compositing


def composite(background, people, size, rng, *, count=None, framing="webcam", harmonize=True, look_rng=None,
              min_visible=0.3, max_upscale=2.0, max_draws=None) -> Composite:
    """Paste people onto a background.

    Each person gets a height (a share of the frame's: webcam 0.4-1.2, full 0.2-0.9, far
    0.05-0.35 log-uniform, whole people only, the feet on a ground plane: higher in the frame
    the smaller they are), a webcam crop (the top 25-55% of a person whose photo shows them
    whole), a mirror at random and a place (``position``); people are pasted from the smallest
    to the largest, so nearer people occlude farther ones and an earlier person's instance
    loses the pixels a later one covers.
    A person that would be upscaled more than ``max_upscale``, or would leave an earlier person
    less than ``min_visible`` of its pixels (five places are tried), is skipped.

    Args:
        background: ``(h, w, 3)`` uint8 RGB, cropped and resized to ``size`` (``crop_background``).
        people: a list of ``Cutout`` candidates, or a callable returning the next candidate
            (``None`` to skip one).
        size: output ``(H, W)``.
        rng: ``numpy.random.Generator`` for the layout (the labels depend on it alone).
        count: people to paste (default: all of a list).
        framing: ``"webcam"``, ``"full"`` or ``"far"``.
        harmonize: colour and blur matched to the background, softened edges, noise and a JPEG
            quality; changes the image only.
        look_rng: generator for harmonisation (default: seeded from one draw of ``rng``).
        min_visible: share of its pasted pixels each person keeps.
        max_upscale: largest scale factor applied to a cut-out.
        max_draws: candidates drawn from a callable at most (default ``4 * count + 4``).

    Returns:
        A ``Composite``; with ``harmonize=False`` every pixel with instance ``k`` holds exactly
        the (resized) pixels of person ``k``.

    Example:
        comp = composite(bg, [cut_a, cut_b], (256, 256), np.random.default_rng(0), framing="full")
    """
    if framing not in FRAMINGS:
        raise ValueError(f"framing {framing!r}: use one of {FRAMINGS}")
    H, W = int(size[0]), int(size[1])
    look_seed = int(rng.integers(2**63))  # drawn either way, so the layout does not depend on harmonize
    look_rng = np.random.default_rng(look_seed) if look_rng is None else look_rng
    canvas = crop_background(np.asarray(background), (H, W), rng)
    stats = background_stats(canvas) if harmonize else None
    if callable(people):
        draw, count = people, (1 if count is None else count)
        max_draws = 4 * count + 4 if max_draws is None else max_draws
    else:
        pool = list(people)
        count = len(pool) if count is None else count
        draw, max_draws = (lambda it=iter(pool): next(it, None)), len(pool)
    lo, hi = HEIGHTS[framing]

    # plan: pick people and their heights; paste the smallest (farthest) first
    plan = []
    for _ in range(max_draws):
        if len(plan) >= count:
            break
        cut = draw()
        if cut is None:
            continue
        if framing == "webcam" and not cut.cut[1]:
            cut = head_and_shoulders(cut, rng.uniform(*HEAD_AND_SHOULDERS))
            if cut is None:
                continue
        if framing == "far":
            if any(cut.cut):  # a close-up cannot stand far away
                continue
            u = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        else:  # a person cut at the bottom of its photo is near the camera: never small in full framing
            u = rng.uniform(*((0.45, 1.0) if framing == "full" and cut.cut[1] else (lo, hi)))
        h, w = cut.shape
        scale = u * H / h
        # a person cut on both sides must span the frame (a close-up): scale up to that
        need = max(W / w if cut.cut[2] and cut.cut[3] else 0.0, H / h if cut.cut[0] and cut.cut[1] else 0.0)
        if scale < need:
            scale = need * 1.02
            if scale * h > 1.6 * H:
                continue
        if scale > max_upscale:
            continue
        if rng.random() < 0.5:
            cut = flip(cut)
        plan.append((u, scale, cut))
    plan.sort(key=lambda p: p[0])

    labels = np.zeros((H, W), np.uint8)
    instances = np.zeros((H, W), np.uint8)
    people_out = []
    for u, scale, cut in plan:
        small = resize_cutout(cut, scale)
        if small is None:
            continue
        if harmonize:
            if look_rng.random() < 0.8:
                small = match_colour(small, stats, look_rng.uniform(0.0, 0.6))
            small = match_blur(small, stats, look_rng)
        placed = None
        for _ in range(5):
            pos = position(small.shape, small.cut, (H, W), framing, rng)
            if pos is None:
                break
            region = _region(small, pos, (H, W))
            if region is None:
                continue
            (fy, fx), _, m = region
            if m.sum() < (16 if framing == "far" else max(16, 0.001 * H * W)):  # slivers at a border
                continue
            under = instances[fy, fx][m]
            lost = np.bincount(under, minlength=len(people_out) + 1)[1:]
            if all(p["visible"] - l >= min_visible * p["pasted"] for p, l in zip(people_out, lost)):
                placed = region
                break
        if placed is None:
            continue
        n = paste(canvas, labels, instances, small, pos, len(people_out) + 1)
        for p, l in zip(people_out, lost):
            p["visible"] -= int(l)
        people_out.append({"name": cut.name, "pasted": n, "visible": n, "height": round(float(u), 3)})
    for k, p in enumerate(people_out, 1):
        ys, xs = np.nonzero(instances == k)
        p["box"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else [0, 0, 0, 0]
    quality = None
    if harmonize:
        canvas = soften_edges(canvas, instances, look_rng)
        canvas = add_noise(canvas, look_rng)
        quality = int(look_rng.integers(50, 96))
    return Composite(canvas, labels, instances, people_out, framing, quality)


def paste(image, labels, instances, cut: Cutout, pos, k: int) -> int:
    """Paste a (scaled) cut-out at ``pos`` = ``(y0, x0)``, in place, over whatever is there.

    Where the person's mask falls inside the frame, the image takes its pixels, ``labels`` its
    labels and ``instances`` the value ``k``: an earlier person loses the pixels it covers.

    Args:
        image: ``(H, W, 3)`` uint8 frame.
        labels: ``(H, W)`` uint8 class ids.
        instances: ``(H, W)`` uint8 instance ids.
        cut: the person, already at its final size.
        pos: top-left corner in the frame (may be negative or reach past the border).
        k: its instance id.

    Returns:
        The number of pixels pasted (inside the frame).
    """
    region = _region(cut, pos, labels.shape)
    if region is None:
        return 0
    (fy, fx), (cy, cx), m = region
    image[fy, fx][m] = cut.image[cy, cx][m]
    labels[fy, fx][m] = cut.labels[cy, cx][m]
    instances[fy, fx][m] = k
    return int(m.sum())


def _region(cut: Cutout, pos, size):
    """The frame slices and cut-out slices where a cut-out at ``pos`` lands, and its mask there."""
    (y0, x0), (h, w), (H, W) = pos, cut.shape, size
    fy0, fx0, fy1, fx1 = max(0, y0), max(0, x0), min(H, y0 + h), min(W, x0 + w)
    if fy1 <= fy0 or fx1 <= fx0:
        return None
    fy, fx = slice(fy0, fy1), slice(fx0, fx1)
    cy, cx = slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0)
    return (fy, fx), (cy, cx), cut.alpha[cy, cx]
