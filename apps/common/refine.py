"""From model output to soft masks that look good on video: temporal smoothing and edge refinement.

``MaskEstimator`` turns one frame into soft masks ``(H, W, K)`` float32 in ``[0, 1]`` for the
names an effect asks for (``"person"``, ``"upper_clothes"``, ``"hair"``, ``"upper_clothes+dress"``):

1. the model's logits at its own resolution (``Segmenter.logits``);
2. resized to a small working resolution, softmax, the wanted channels picked;
3. temporal smoothing (exponential moving average on the soft mask) at that resolution;
4. edge refinement with the fast guided filter: the filter's linear coefficients are
   computed against the grey frame at the working resolution and applied at full resolution,
   so edges follow the frame's edges (hair, fingers) for the price of a few small box filters.

All buffers are allocated on the first frame of a given size and reused afterwards.

Reference:
    He, Sun, Tang. "Guided Image Filtering", ECCV 2010 / TPAMI 2013.
    He, Sun. "Fast Guided Filter", arXiv:1505.00996, 2015.
"""

from __future__ import annotations

import time

import numpy as np

from kseg.errors import KsegError


def _box(src, radius, dst=None):
    import cv2

    k = 2 * radius + 1
    return cv2.boxFilter(src, -1, (k, k), dst=dst, normalize=True, borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int = 4, eps: float = 1e-3) -> np.ndarray:
    """Edge-preserving smoothing of ``src`` steered by the edges of ``guide`` (grey guide).

    ``q = a·I + b`` with ``a = cov(I, p) / (var(I) + eps)`` and ``b = mean(p) - a·mean(I)``, both
    box-averaged over windows of radius ``radius``. Where the guide is flat the output is the
    local mean of ``src``; where the guide has an edge the output follows it.

    Args:
        guide: ``(H, W)`` float32 guide image in ``[0, 1]``.
        src: ``(H, W)`` or ``(H, W, K)`` float32 input (K ≤ 4).
        radius: window radius in pixels.
        eps: regularization; larger smooths more across weak edges.

    Returns:
        The filtered ``src``, same shape, float32 (not clipped).

    Example:
        alpha = guided_filter(grey / 255, coarse_alpha, radius=8, eps=1e-3)

    Reference:
        He, Sun, Tang. "Guided Image Filtering", ECCV 2010.
    """
    a, b = guided_coefficients(guide, src, radius, eps)
    g = guide if src.ndim == 2 else guide[..., None]
    return a * g + b


def guided_coefficients(guide, src, radius, eps, bufs=None):
    """The guided filter's box-averaged coefficients ``(mean_a, mean_b)`` (see ``guided_filter``).

    ``bufs`` is an optional dict of reusable arrays (filled on the first call).
    """
    import cv2

    bufs = {} if bufs is None else bufs

    def buf(name, like):
        arr = bufs.get(name)
        if arr is None or arr.shape != like.shape:
            arr = bufs[name] = np.empty(like.shape, np.float32)
        return arr

    if src.ndim == 3 and src.shape[2] > 1:
        g = cv2.merge([guide] * src.shape[2], dst=buf("g", src))
    elif src.ndim == 3:
        g = guide.reshape(src.shape)
    else:
        g = guide

    mean_i = _box(g, radius, buf("mean_i", g))
    mean_p = _box(src, radius, buf("mean_p", src))
    ip = np.multiply(g, src, out=buf("ip", src))
    corr_ip = _box(ip, radius, buf("corr_ip", src))
    ii = np.multiply(g, g, out=buf("ii", g))
    corr_ii = _box(ii, radius, buf("corr_ii", g))
    # var_I = corr_II - mean_I², cov_Ip = corr_Ip - mean_I·mean_p
    var_i = np.subtract(corr_ii, np.multiply(mean_i, mean_i, out=ii), out=corr_ii)
    cov_ip = np.subtract(corr_ip, np.multiply(mean_i, mean_p, out=ip), out=corr_ip)
    var_i += eps
    a = np.divide(cov_ip, var_i, out=buf("a", src))
    b = np.subtract(mean_p, np.multiply(a, mean_i, out=ip), out=buf("b", src))
    mean_a = _box(a, radius, buf("mean_a", src))
    mean_b = _box(b, radius, buf("mean_b", src))
    return mean_a, mean_b


class TemporalSmoother:
    """Exponential moving average of a soft mask over frames, against flicker on a still person.

    ``m_t = m_{t-1} + w · (x_t - m_{t-1})``. With ``adaptive=False`` ``w = 1 - strength``
    everywhere. With ``adaptive=True`` the weight grows with the change, ``w = (1 - strength) +
    strength · min(1, |x_t - m_{t-1}| / 0.5)``, so small frame-to-frame wobble (flicker) is
    damped while a real movement (a change of 0.5 or more) is taken at once, without a trail.

    Args:
        strength: 0 (off) … 1 (frozen); 0.6 by default.
        adaptive: motion-adaptive weight (see above).

    Example:
        smooth = TemporalSmoother(0.6)
        m = smooth(raw_mask)     # same shape, float32
    """

    def __init__(self, strength: float = 0.6, adaptive: bool = True):
        self.strength = float(strength)
        self.adaptive = adaptive
        self.state = None
        self._w = None

    def reset(self):
        """Forget the history (a new scene or a new model)."""
        self.state = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.state is None or self.state.shape != x.shape or self.strength <= 0:
            self.state = np.array(x, dtype=np.float32, copy=True)
            self._w = np.empty_like(self.state)
            return self.state
        s = min(max(self.strength, 0.0), 0.99)
        w = self._w
        np.subtract(x, self.state, out=w)  # w = x - m
        if self.adaptive:
            d = np.abs(w)
            d *= s / 0.5
            np.minimum(d, s, out=d)
            d += 1.0 - s
            w *= d
        else:
            w *= 1.0 - s
        self.state += w
        return self.state




class MaskEstimator:
    """Frame → soft masks for named classes, smoothed over time and refined against the frame.

    Args:
        segmenter: a ``kseg.runtime.Segmenter`` (or anything with ``logits(rgb)``,
            ``class_names``, ``person_index`` and ``output_kind``).
        names: masks to produce, in order. ``"person"`` is ``1 - P(background)`` when the model
            has a ``background`` class (so a parsing model gives a person mask too), else
            ``P(person_index)``; another name is that class's probability; ``"a+b"`` sums classes.
        work_scale: the working resolution as a fraction of the frame (smoothing and the guided
            filter's coefficients run there). 0.5 by default.
        refine: apply the fast guided filter (else a plain bilinear upsample).
        radius: guided-filter radius as a fraction of the frame's longer side (0.0125: 8 px
            at 640×480), at least one working-resolution pixel.
        eps: guided-filter regularization (on a 0..1 grey guide).
        smoothing: ``TemporalSmoother`` strength (0: off).
        adaptive: motion-adaptive smoothing.

    Attributes:
        timings: ``{"infer": ms, "refine": ms}`` of the last call.
        person_fraction: mean of the first mask at the working resolution for the last frame.

    Raises:
        KsegError: a name the model does not have (e.g. try-on with the person/background model).

    Example:
        est = MaskEstimator(Segmenter("exports/parsing.tflite"), names=("upper_clothes", "hair"))
        masks = est(rgb)            # (H, W, 2) float32
    """

    def __init__(self, segmenter, names=("person",), work_scale: float = 0.5, refine: bool = True,
                 radius: float = 0.0125, eps: float = 2e-3, smoothing: float = 0.6, adaptive: bool = True):
        self.segmenter = segmenter
        self.names = tuple(names)
        self.work_scale = float(work_scale)
        self.refine = refine
        self.radius = float(radius)
        self.eps = float(eps)
        self.smoother = TemporalSmoother(smoothing, adaptive)
        self.timings = {"infer": 0.0, "refine": 0.0}
        self.person_fraction = 0.0
        self._plan = [self._resolve(n) for n in self.names]
        self._bufs = {}
        self._gf = {}

    @property
    def smoothing(self) -> float:
        """Temporal smoothing strength (settable; 0 turns it off)."""
        return self.smoother.strength

    @smoothing.setter
    def smoothing(self, value):
        self.smoother.strength = float(value)

    def _resolve(self, name):
        classes = [c.lower() for c in self.segmenter.class_names]
        model = getattr(self.segmenter, "path", None) or "the model"
        if name == "person":
            if "background" in classes and len(classes) > 2:
                return ("not", classes.index("background"))
            idx = self.segmenter.person_index
            if idx is None:
                raise KsegError(f"{model} has no person class (classes: {', '.join(classes)}); use a person model")
            return ("sum", (int(idx),))
        idx = []
        for part in name.split("+"):
            if part.lower() not in classes:
                raise KsegError(
                    f"{model} has no class {part!r} (its classes: {', '.join(classes)}); "
                    "try-on needs the parsing model (exports/parsing.tflite or --parsing-model)"
                )
            idx.append(classes.index(part.lower()))
        return ("sum", tuple(idx))

    def reset(self):
        """Forget the temporal history (call on a scene cut or a model switch)."""
        self.smoother.reset()

    def _buf(self, name, shape, dtype=np.float32):
        arr = self._bufs.get(name)
        if arr is None or arr.shape != shape or arr.dtype != dtype:
            arr = self._bufs[name] = np.empty(shape, dtype)
        return arr

    def _probabilities(self, small, masks):
        """Fill ``masks[..., j]`` with the wanted probabilities from ``small`` ``(h, w, C)`` logits.

        Channel planes, not a reduction over the last axis: numpy reduces a short last axis
        slowly, and the 2-class case is a single sigmoid.
        """
        import cv2

        c = small.shape[-1]
        planes = [small[..., i] for i in range(c)]
        is_prob = getattr(self.segmenter, "output_kind", "logits") == "probabilities"
        if not is_prob and c == 2:
            # p1 = 1 / (1 + exp(l0 - l1)); p0 = 1 - p1
            p1 = self._buf("p1", small.shape[:2])
            np.subtract(planes[0], planes[1], out=p1)
            np.clip(p1, -60, 60, out=p1)
            cv2.exp(p1, dst=p1)
            p1 += 1.0
            np.divide(1.0, p1, out=p1)

            def prob(i):
                if i == 1:
                    return p1
                p0 = self._buf("p0", p1.shape)
                return np.subtract(1.0, p1, out=p0)
        elif not is_prob:
            m = self._buf("max", small.shape[:2])
            np.copyto(m, planes[0])
            for p in planes[1:]:
                np.maximum(m, p, out=m)
            total = self._buf("total", m.shape)
            total[...] = 0.0
            exps = []
            for i, p in enumerate(planes):
                e = self._buf(("exp", i), m.shape)
                np.subtract(p, m, out=e)
                cv2.exp(e, dst=e)
                total += e
                exps.append(e)
            np.divide(1.0, total, out=total)

            def prob(i):
                return np.multiply(exps[i], total, out=self._buf(("prob", i), total.shape))
        else:
            def prob(i):
                return planes[i]

        for j, (kind, idx) in enumerate(self._plan):
            if kind == "not":
                np.subtract(1.0, prob(idx), out=masks[..., j])
            else:
                masks[..., j] = prob(idx[0])
                for i in idx[1:]:
                    masks[..., j] += prob(i)
        return masks

    def __call__(self, rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Soft masks ``(H, W, K)`` float32 in ``[0, 1]`` for frame ``rgb`` (``(H, W, 3)`` uint8 RGB)."""
        import cv2

        t0 = time.perf_counter()
        logits = self.segmenter.logits(rgb)
        t1 = time.perf_counter()
        h, w = rgb.shape[:2]
        wh, ww = max(8, round(h * self.work_scale)), max(8, round(w * self.work_scale))
        k = len(self._plan)
        small = cv2.resize(logits, (ww, wh), dst=self._buf("logits_small", (wh, ww) + logits.shape[2:]),
                           interpolation=cv2.INTER_LINEAR)
        masks = self._buf("masks", (wh, ww, k))
        self._probabilities(small.reshape(wh, ww, -1), masks)
        masks = self.smoother(masks)
        self.person_fraction = float(masks[..., 0].mean())
        if out is None or out.shape != (h, w, k) or out.dtype != np.float32:
            out = np.empty((h, w, k), np.float32)
        if self.refine:
            grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY, dst=self._buf("grey", (h, w), np.uint8))
            guide = self._buf("guide", (h, w))
            np.multiply(grey, np.float32(1 / 255), out=guide)
            guide_small = cv2.resize(guide, (ww, wh), dst=self._buf("guide_small", (wh, ww)), interpolation=cv2.INTER_AREA)
            src = masks if k > 1 else masks[..., 0]
            r = max(1, round(self.radius * max(h, w) * self.work_scale))
            mean_a, mean_b = guided_coefficients(guide_small, src, r, self.eps, self._gf)
            # fast guided filter: coefficients upsampled, applied to the full-resolution guide
            a_full = cv2.resize(mean_a, (w, h), dst=self._buf("a_full", (h, w) if k == 1 else (h, w, k)),
                                interpolation=cv2.INTER_LINEAR)
            b_full = cv2.resize(mean_b, (w, h), dst=self._buf("b_full", (h, w) if k == 1 else (h, w, k)),
                                interpolation=cv2.INTER_LINEAR)
            target = out[..., 0] if k == 1 else out
            if k == 1:
                np.multiply(a_full, guide, out=a_full)
                np.add(a_full, b_full, out=target)
            else:
                np.multiply(a_full, guide[..., None], out=a_full)
                np.add(a_full, b_full, out=target)
            # a slight contrast stretch: the filter's faint tails (< 2 %) become exactly 0 or 1, so
            # the background is fully replaced and the person fully kept outside the edge band
            out -= 0.02
            out *= 1.0 / 0.96
            np.clip(out, 0.0, 1.0, out=out)
        else:
            up = cv2.resize(masks, (w, h), interpolation=cv2.INTER_LINEAR)
            out[...] = up.reshape(h, w, k)
        t2 = time.perf_counter()
        self.timings = {"infer": (t1 - t0) * 1e3, "refine": (t2 - t1) * 1e3}
        return out
