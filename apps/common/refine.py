"""From model output to soft masks that look good on video: temporal smoothing and edge refinement.

``MaskEstimator`` turns one frame into soft masks ``(H, W, K)`` float32 in ``[0, 1]`` for the
names an effect asks for (``"person"``, ``"upper_clothes"``, ``"hair"``, ``"upper_clothes+dress"``):

1. the model's logits at its own resolution (``Segmenter.logits``);
2. resized to a small working resolution, softmax, the wanted channels picked;
3. temporal smoothing (exponential moving average on the soft mask) at that resolution;
4. edge refinement with the fast guided filter and a colour guide: the filter's linear
   coefficients are computed against the frame at the working resolution (a quarter) and
   applied to the frame at half resolution, so edges follow the frame's colour edges (hair,
   fingers, a jumper against a wall of the same brightness) for the price of a few small box
   filters; a bilinear upsample takes the result to the frame.

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


class ColorGuidedFilter:
    """The guided filter with a colour guide, split so that one guide serves several masks.

    ``q = a·I + b`` with ``a = (Σ + eps·U)⁻¹ cov(I, p)`` per pixel (``Σ`` the 3×3 colour
    covariance of the window), so an edge between two colours of equal brightness (an orange
    jumper on a light wall) still stops the smoothing, which a grey guide cannot do.
    ``set_guide`` computes everything that depends on the guide alone (window means and the
    inverse covariance); ``coefficients`` then costs a few box filters per mask. All arrays
    are contiguous channel planes.

    Args:
        radius: window radius in pixels.
        eps: regularization.

    Example:
        gf = ColorGuidedFilter(2, 1e-3)
        gf.set_guide(small_rgb_float)        # (h, w, 3) in [0, 1]
        mean_a, mean_b = gf.coefficients(mask)
        q = (mean_a * small_rgb_float).sum(-1) + mean_b

    Reference:
        He, Sun, Tang. "Guided Image Filtering", ECCV 2010 (section 3.5, colour guide).
    """

    def __init__(self, radius: int, eps: float):
        self.radius = int(radius)
        self.eps = float(eps)
        self.planes = self.means = self.inv = None

    def set_guide(self, guide: np.ndarray) -> None:
        """Precompute the guide's window means and inverse regularized covariance."""
        import cv2

        r = self.radius
        planes = cv2.split(guide)
        means = cv2.split(_box(guide, r))
        (ir, ig, ib), (mr, mg, mb) = planes, means

        def var(x, y, mx, my, reg):
            v = _box(x * y, r)
            v -= mx * my
            if reg:
                v += self.eps
            return v

        a_ = var(ir, ir, mr, mr, True)
        b_ = var(ir, ig, mr, mg, False)
        c_ = var(ir, ib, mr, mb, False)
        d_ = var(ig, ig, mg, mg, True)
        e_ = var(ig, ib, mg, mb, False)
        f_ = var(ib, ib, mb, mb, True)
        i_rr = d_ * f_ - e_ * e_
        i_rg = c_ * e_ - b_ * f_
        i_rb = b_ * e_ - c_ * d_
        i_gg = a_ * f_ - c_ * c_
        i_gb = b_ * c_ - a_ * e_
        i_bb = a_ * d_ - b_ * b_
        inv_det = a_ * i_rr
        inv_det += b_ * i_rg
        inv_det += c_ * i_rb
        np.divide(1.0, inv_det, out=inv_det)
        for m in (i_rr, i_rg, i_rb, i_gg, i_gb, i_bb):
            m *= inv_det
        self.planes, self.means = planes, means
        self.inv = (i_rr, i_rg, i_rb, i_gg, i_gb, i_bb)

    def coefficients(self, src: np.ndarray):
        """``(mean_a, mean_b)``, ``(h, w, 3)`` and ``(h, w)`` float32, for a ``(h, w)`` mask."""
        import cv2

        r = self.radius
        (ir, ig, ib), (mr, mg, mb) = self.planes, self.means
        i_rr, i_rg, i_rb, i_gg, i_gb, i_bb = self.inv
        mean_p = _box(src, r)
        cr = _box(ir * src, r)
        cr -= mr * mean_p
        cg = _box(ig * src, r)
        cg -= mg * mean_p
        cb = _box(ib * src, r)
        cb -= mb * mean_p
        a_r = cr * i_rr + cg * i_rg + cb * i_rb
        a_g = cr * i_rg + cg * i_gg + cb * i_gb
        a_b = cr * i_rb + cg * i_gb + cb * i_bb
        b = mean_p - a_r * mr - a_g * mg - a_b * mb
        return _box(cv2.merge([a_r, a_g, a_b]), r), _box(b, r)


def color_guided_coefficients(guide, src, radius, eps):
    """Box-averaged coefficients ``(mean_a, mean_b)`` of the colour-guide guided filter.

    Args:
        guide: ``(h, w, 3)`` float32 colour guide in ``[0, 1]``.
        src: ``(h, w)`` float32 input.
        radius: window radius in pixels.
        eps: regularization.

    Returns:
        ``(mean_a, mean_b)``: ``(h, w, 3)`` and ``(h, w)`` float32; ``q = Σ_c mean_a_c·I_c + mean_b``.
    """
    gf = ColorGuidedFilter(radius, eps)
    gf.set_guide(np.ascontiguousarray(guide, np.float32))
    return gf.coefficients(np.ascontiguousarray(src, np.float32))


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
        work_scale: the working resolution as a fraction of the frame: the masks, the smoothing
            and the guided filter's coefficients live there (0.25: 160×120 for 640×480).
        apply_scale: the resolution the refined edges are computed at before the final bilinear
            upsample (0.5; 1.0 for edges at full resolution, at about 4× the cost).
        refine: apply the fast guided filter with a colour guide (else a plain bilinear upsample).
        radius: guided-filter radius as a fraction of the frame's longer side (0.0125: 8 px
            at 640×480), at least one working-resolution pixel.
        eps: guided-filter regularization (on a 0..1 grey guide).
        smoothing: ``TemporalSmoother`` strength (0: off).
        adaptive: motion-adaptive smoothing.

    The work is split in two stages that a pipeline may run in different threads:
    ``infer(rgb) -> (logits, half)`` and ``refine_masks(rgb, logits, half, out)``;
    calling the estimator runs both.

    Attributes:
        timings: ``{"infer": ms, "refine": ms}`` of the last call.
        person_fraction: mean of the first mask at the working resolution for the last frame.

    Raises:
        KsegError: a name the model does not have (e.g. try-on with the person/background model).

    Example:
        est = MaskEstimator(Segmenter("exports/parsing.tflite"), names=("upper_clothes", "hair"))
        masks = est(rgb)            # (H, W, 2) float32
    """

    def __init__(self, segmenter, names=("person",), work_scale: float = 0.25, apply_scale: float = 0.5,
                 refine: bool = True, radius: float = 0.0125, eps: float = 1e-3, smoothing: float = 0.6,
                 adaptive: bool = True, gate=None):
        self.segmenter = segmenter
        # a person model whose person probability multiplies every mask: the parsing model alone
        # takes walls and furniture for clothes when nobody is in view
        self.gate = gate
        if gate is not None and getattr(gate, "person_index", None) is None:
            raise KsegError(f"{getattr(gate, 'path', None) or 'the gate model'} has no person class; "
                            "gate try-on with a person model such as exports/portrait.tflite")
        self.names = tuple(names)
        self.work_scale = float(work_scale)
        self.apply_scale = float(apply_scale)
        self.refine = refine
        self.radius = float(radius)
        self.eps = float(eps)
        self.smoother = TemporalSmoother(smoothing, adaptive)
        self.timings = {"infer": 0.0, "refine": 0.0}
        self.person_fraction = 0.0
        self._plan = [self._resolve(n) for n in self.names]
        self._bufs = {}
        self._gf = None
        self.infer_ms = self.refine_ms = 0.0

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
        if c == 1 or (c == 2 and not is_prob):
            # two classes are one sigmoid: p1 = 1 / (1 + exp(z)), z = l0 - l1, or -l for a model with
            # one sigmoid channel (MediaPipe's head); p0 = 1 - p1
            p1 = self._buf("p1", small.shape[:2])
            if is_prob:
                np.copyto(p1, planes[0])
            else:
                if c == 2:
                    np.subtract(planes[0], planes[1], out=p1)
                else:
                    np.negative(planes[0], out=p1)
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

    def _model_input(self, rgb, half=None):
        """The frame at the model's input size, shrunk in two cheap steps, and the half-size frame.

        A 2× area shrink (a fast path in OpenCV) then a bilinear resize to the model's size costs
        about a fifth of one area resize by a fractional factor (640×480 → 256×256); the half-size
        frame is kept for the edge refinement. The runtime skips its own resize for this input.
        Returns ``(model_input, half or None)``.
        """
        import cv2

        size = getattr(self.segmenter, "input_size", None)
        h, w = rgb.shape[:2]
        if not size:
            return rgb, None
        ih, iw = size
        if h // 2 < 0.9 * ih or w // 2 < 0.9 * iw:
            return rgb, None  # small frame: let the runtime resize it
        shape = (h // 2, w // 2, 3)
        if half is None or half.shape != shape or half.dtype != np.uint8:
            half = self._buf("half", shape, np.uint8)
        cv2.resize(rgb, (w // 2, h // 2), dst=half, interpolation=cv2.INTER_AREA)
        model_in = cv2.resize(half, (iw, ih), dst=self._buf("model_in", (ih, iw, 3), np.uint8),
                              interpolation=cv2.INTER_LINEAR)
        return model_in, half

    def _gate_probability(self, gate_logits, size_hw):
        """The gate model's person probability at ``size_hw`` (softmax over its classes)."""
        import cv2

        g = np.asarray(gate_logits, np.float32)
        if g.shape[-1] == 1:  # one sigmoid channel: the person probability itself
            p = g[..., 0] if getattr(self.gate, "output_kind", "logits") == "probabilities" else 1.0 / (1.0 + np.exp(-np.clip(g[..., 0], -60, 60)))
            return cv2.resize(np.ascontiguousarray(p, np.float32), (size_hw[1], size_hw[0]), interpolation=cv2.INTER_LINEAR)
        if getattr(self.gate, "output_kind", "logits") != "probabilities":
            g = g - g.max(axis=-1, keepdims=True)
            np.exp(g, out=g)
            g /= g.sum(axis=-1, keepdims=True)
        p = np.ascontiguousarray(g[..., int(self.gate.person_index)])
        return cv2.resize(p, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_LINEAR)

    def infer(self, rgb: np.ndarray, half: np.ndarray | None = None):
        """Stage 1, the model: logits at the model's resolution for frame ``rgb``.

        Args:
            rgb: ``(H, W, 3)`` uint8 RGB frame.
            half: optional ``(H//2, W//2, 3)`` uint8 buffer for the half-size frame (pass one per
                frame in flight when ``infer`` and ``refine_masks`` run in different threads).

        Returns:
            ``(logits, half)``: ``(h, w, C)`` float32 and the half-size frame (or ``None``), to
            hand to ``refine_masks``. Sets ``infer_ms``.
        """
        t0 = time.perf_counter()
        model_in, half = self._model_input(rgb, half)
        logits = self.segmenter.logits(model_in)
        if self.gate is not None:
            logits = (logits, self.gate.logits(model_in))
        self.infer_ms = (time.perf_counter() - t0) * 1e3
        return logits, half

    def __call__(self, rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Soft masks ``(H, W, K)`` float32 in ``[0, 1]`` for frame ``rgb`` (``(H, W, 3)`` uint8 RGB)."""
        logits, half = self.infer(rgb)
        out = self.refine_masks(rgb, logits, half, out)
        self.timings = {"infer": self.infer_ms, "refine": self.refine_ms}
        return out

    def refine_masks(self, rgb: np.ndarray, logits: np.ndarray, half: np.ndarray | None = None,
                     out: np.ndarray | None = None) -> np.ndarray:
        """Stage 2: probabilities, temporal smoothing and edge refinement for one frame's logits.

        Call it in frame order (the smoothing keeps state). Sets ``refine_ms`` and
        ``person_fraction``.

        Args:
            rgb: the frame the logits were computed from.
            logits: from ``infer``.
            half: the half-size frame from ``infer``.
            out: ``(H, W, K)`` float32 buffer for the result.

        Returns:
            ``(H, W, K)`` float32 soft masks in ``[0, 1]``.
        """
        import cv2

        t1 = time.perf_counter()
        h, w = rgb.shape[:2]
        wh, ww = max(8, round(h * self.work_scale)), max(8, round(w * self.work_scale))
        k = len(self._plan)
        gate_logits = None
        if isinstance(logits, tuple):
            logits, gate_logits = logits
        small = cv2.resize(logits, (ww, wh), dst=self._buf("logits_small", (wh, ww) + logits.shape[2:]),
                           interpolation=cv2.INTER_LINEAR)
        masks = self._buf("masks", (wh, ww, k))
        self._probabilities(small.reshape(wh, ww, -1), masks)
        if gate_logits is not None:
            masks *= self._gate_probability(gate_logits, (wh, ww))[..., None]
        masks = self.smoother(masks)
        self.person_fraction = float(masks[..., 0].mean())
        if out is None or out.shape != (h, w, k) or out.dtype != np.float32:
            out = np.empty((h, w, k), np.float32)
        if self.refine:
            # fast guided filter with a colour guide: coefficients at the working resolution,
            # applied to the frame at apply_scale, the result upsampled to the frame
            ah, aw = max(8, round(h * self.apply_scale)), max(8, round(w * self.apply_scale))
            if (ah, aw) == (h, w):
                frame_a = rgb
            elif half is not None and half.shape[:2] == (ah, aw):
                frame_a = half
            else:
                frame_a = cv2.resize(rgb, (aw, ah), dst=self._buf("frame_a", (ah, aw, 3), np.uint8),
                                     interpolation=cv2.INTER_AREA)
            small_u8 = cv2.resize(frame_a, (ww, wh), dst=self._buf("frame_w", (wh, ww, 3), np.uint8),
                                  interpolation=cv2.INTER_AREA)
            guide = np.multiply(small_u8, np.float32(1 / 255), out=self._buf("guide", (wh, ww, 3)))
            r = max(1, round(self.radius * max(h, w) * self.work_scale))
            q = self._buf("q", (ah, aw, k))
            a_up = self._buf("a_up", (ah, aw, 3))
            b_up = self._buf("b_up", (ah, aw))
            prod = self._buf("prod", (ah, aw, 3))
            ones = np.ones((1, 3), np.float32)
            gf = self._gf
            if gf is None or gf.radius != r or gf.eps != self.eps:
                gf = self._gf = ColorGuidedFilter(r, self.eps)
            gf.set_guide(guide)  # once per frame, whatever the number of masks
            for j in range(k):
                mean_a, mean_b = gf.coefficients(np.ascontiguousarray(masks[..., j]))
                mean_a *= np.float32(1 / 255)  # applied to the uint8 frame directly
                cv2.resize(mean_a, (aw, ah), dst=a_up, interpolation=cv2.INTER_LINEAR)
                cv2.resize(mean_b, (aw, ah), dst=b_up, interpolation=cv2.INTER_LINEAR)
                np.multiply(a_up, frame_a, out=prod)
                qj = cv2.transform(prod, ones, dst=self._buf("qj", (ah, aw)))  # a_r·R + a_g·G + a_b·B
                np.add(qj, b_up, out=q[..., j])
            # a slight contrast stretch: the filter's faint tails (< 2 %) become exactly 0 or 1, so
            # the background is fully replaced and the person fully kept outside the edge band
            q -= 0.02
            q *= 1.0 / 0.96
            np.clip(q, 0.0, 1.0, out=q)
            if (ah, aw) == (h, w):
                np.copyto(out, q)
            else:
                cv2.resize(q, (w, h), dst=out.reshape((h, w) if k == 1 else (h, w, k)), interpolation=cv2.INTER_LINEAR)
        else:
            up = cv2.resize(masks, (w, h), interpolation=cv2.INTER_LINEAR)
            out[...] = up.reshape(h, w, k)
        self.refine_ms = (time.perf_counter() - t1) * 1e3
        return out
