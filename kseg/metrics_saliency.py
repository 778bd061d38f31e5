"""Salient-object detection (SOD) metrics: MAE, S-measure, E-measure, F-β, weighted F-β.

One streaming class, ``SaliencyMetrics``, computes the measures the SOD literature reports,
the way the reference implementation ``pysodmetrics`` (PySODMetrics 1.6.2, itself checked
against the authors' MATLAB code) computes them, in numpy (and scipy for weighted F-β):

- each ``update(pred, gt)`` takes one map pair of uint8 0–255 images (``H×W``), or a batch
  ``(B, H, W)``; the ground truth is foreground where it is > 128, and the prediction is
  divided by 255 and then min–max stretched to [0, 1] (MATLAB's ``mapminmax(im2double(·))``)
  unless it is constant;
- every score is computed per image and ``result()`` averages over the images seen; the
  threshold curves (F-β and E-measure at the 256 thresholds ``pred·255 >= t``, t = 255…0) are
  averaged per threshold first, and ``max_*``/``mean_*`` are the maximum and the mean of the
  averaged curve;
- ``adaptive_*`` binarize each map at twice its mean (at most 1).

F-β uses β² = 0.3 (precision weighted more), S-measure α = 0.5. Weighted F-β uses β² = 1 by
default, as the reference's ``WeightedFmeasure`` and Margolin et al.'s code do; pass
``weighted_beta2=0.3`` for the other convention.

One deliberate difference: when the foreground's centroid lies on the last row or column,
one of S-measure's four regions is empty; the reference then returns NaN for that image (and
so for the whole average), kseg gives the empty region no weight, as its area is zero.

References:
    Achanta et al., "Frequency-tuned salient region detection", CVPR 2009 (F-β).
    Perazzi et al., "Saliency filters", CVPR 2012 (MAE).
    Fan et al., "Structure-measure: A new way to evaluate foreground maps", ICCV 2017.
    Fan et al., "Enhanced-alignment Measure for Binary Foreground Map Evaluation", IJCAI 2018.
    Margolin et al., "How to evaluate foreground maps?", CVPR 2014 (weighted F-β).
"""

from __future__ import annotations

import numpy as np

from kseg.errors import KsegError

EPS = np.spacing(1)  # MATLAB's eps, as the reference uses
THRESHOLDS = 256

KEYS = ("mae", "s_measure", "max_e_measure", "mean_e_measure", "adaptive_e_measure", "max_f_beta",
        "mean_f_beta", "adaptive_f_beta", "weighted_f_beta")


def prepare(pred, gt):
    """uint8 0–255 maps → (prediction in [0, 1] float64, boolean ground truth)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if gt.dtype == bool:
        gt = gt.astype(np.uint8) * 255
    if pred.dtype == bool:
        pred = pred.astype(np.uint8) * 255
    gt = gt > 128
    pred = pred / 255
    lo, hi = pred.min(), pred.max()
    if hi != lo:
        pred = (pred - lo) / (hi - lo)
    return pred, gt


def adaptive_threshold(pred) -> float:
    """Twice the mean of the map, at most 1."""
    return min(2 * pred.mean(), 1)


def mae(pred, gt) -> float:
    return np.mean(np.abs(pred - gt))


# --- S-measure -------------------------------------------------------------------------


def s_measure(pred, gt, alpha=0.5) -> float:
    """Structure measure: α · object-aware + (1 − α) · region-aware similarity."""
    y = np.mean(gt)
    if y == 0:
        return 1 - np.mean(pred)
    if y == 1:
        return np.mean(pred)
    return max(0.0, alpha * _s_object(pred, gt) + (1 - alpha) * _s_region(pred, gt))


def _object_score(x) -> float:
    mean = np.mean(x)
    std = np.std(x, ddof=1) if x.size > 1 else 0
    return 2 * mean / (mean ** 2 + 1 + std + EPS)


def _s_object(pred, gt) -> float:
    fg = np.mean(gt)
    return _object_score(pred[gt]) * fg + _object_score((1 - pred)[~gt]) * (1 - fg)


def _s_region(pred, gt) -> float:
    h, w = gt.shape
    area = h * w
    # the foreground's centroid (numpy rounds halves to even, as the reference does), + 1 for
    # MATLAB's 1-based ``1:X`` ranges
    cy, cx = np.argwhere(gt).mean(axis=0).round()
    cy, cx = int(cy) + 1, int(cx) + 1
    w_lt = cx * cy / area
    w_rt = cy * (w - cx) / area
    w_lb = (h - cy) * cx / area
    w_rb = 1 - w_lt - w_rt - w_lb
    quadrants = (((slice(0, cy), slice(0, cx)), w_lt), ((slice(0, cy), slice(cx, w)), w_rt),
                 ((slice(cy, h), slice(0, cx)), w_lb), ((slice(cy, h), slice(cx, w)), w_rb))
    # an empty quadrant (the centroid on the last row or column) has no area and adds nothing;
    # the reference returns NaN for the whole image there
    return sum(_ssim(pred[q], gt[q]) * wq for q, wq in quadrants if pred[q].size)


def _ssim(pred, gt) -> float:
    n = pred.size
    x, y = np.mean(pred), np.mean(gt)
    sx = np.sum((pred - x) ** 2) / (n - 1 + EPS)
    sy = np.sum((gt - y) ** 2) / (n - 1 + EPS)
    sxy = np.sum((pred - x) * (gt - y)) / (n - 1 + EPS)
    a = 4 * x * y * sxy
    b = (x ** 2 + y ** 2) * (sx + sy)
    if a != 0:
        return a / (b + EPS)
    return 1.0 if b == 0 else 0.0


# --- threshold counts, E-measure, F-β ---------------------------------------------------


def threshold_counts(pred, gt):
    """Foreground-predicted pixel counts inside and outside the truth at t = 255, 254, …, 0
    (the map quantized as ``floor(pred · 255)``, a pixel predicted foreground when >= t)."""
    q = (pred * 255).astype(np.uint8)
    fg = np.cumsum(np.bincount(q[gt], minlength=THRESHOLDS)[::-1])
    bg = np.cumsum(np.bincount(q[~gt], minlength=THRESHOLDS)[::-1])
    return fg, bg


def _enhanced_alignment(fg_fg, fg_bg, gt_fg, size):
    """E-measure from the counts of predicted-foreground pixels in the truth's foreground
    (``fg_fg``) and background (``fg_bg``); scalars or arrays over thresholds."""
    pred_fg = fg_fg + fg_bg
    pred_bg = size - pred_fg
    if gt_fg == 0:
        total = pred_bg
    elif gt_fg == size:
        total = pred_fg
    else:
        bg_fg = gt_fg - fg_fg
        bg_bg = pred_bg - bg_fg
        mp, mg = pred_fg / size, gt_fg / size
        total = 0
        # the four regions (pred, gt) ∈ {fg, bg}²; the bias-removed values of each side there
        for count, p, g in ((fg_fg, 1 - mp, 1 - mg), (fg_bg, 1 - mp, -mg), (bg_fg, -mp, 1 - mg), (bg_bg, -mp, -mg)):
            align = 2 * p * g / (p ** 2 + g ** 2 + EPS)
            total = total + (align + 1) ** 2 / 4 * count
    return total / (size - 1 + EPS)


def e_measure_curve(pred, gt, counts=None) -> np.ndarray:
    fg, bg = counts if counts is not None else threshold_counts(pred, gt)
    return _enhanced_alignment(fg, bg, np.count_nonzero(gt), gt.size) * np.ones(THRESHOLDS)


def adaptive_e_measure(pred, gt) -> float:
    binary = pred >= adaptive_threshold(pred)
    return _enhanced_alignment(np.count_nonzero(binary & gt), np.count_nonzero(binary & ~gt),
                               np.count_nonzero(gt), gt.size)


def f_beta_curve(pred, gt, beta2=0.3, counts=None) -> np.ndarray:
    tp, bg = counts if counts is not None else threshold_counts(pred, gt)
    positives = tp + bg
    positives[positives == 0] = 1  # no predicted foreground: TP = 0 too
    precision = tp / positives
    recall = tp / max(np.count_nonzero(gt), 1)
    num = (1 + beta2) * precision * recall
    return num / np.where(num == 0, 1, beta2 * precision + recall)


def adaptive_f_beta(pred, gt, beta2=0.3) -> float:
    binary = pred >= adaptive_threshold(pred)
    inter = np.count_nonzero(binary & gt)
    if inter == 0:
        return 0.0
    p = inter / np.count_nonzero(binary)
    r = inter / np.count_nonzero(gt)
    return (1 + beta2) * p * r / (beta2 * p + r)


# --- weighted F-β ----------------------------------------------------------------------


def _matlab_gaussian(size=7, sigma=5.0) -> np.ndarray:
    """MATLAB's ``fspecial('gaussian', size, sigma)``."""
    m = (size - 1) / 2
    y, x = np.ogrid[-m:m + 1, -m:m + 1]
    k = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    k[k < np.finfo(k.dtype).eps * k.max()] = 0
    return k / k.sum()


def weighted_f_beta(pred, gt, beta2=1.0) -> float:
    """Margolin et al.'s weighted F-β (0 when the truth has no foreground)."""
    if not gt.any():
        return 0.0
    from scipy.ndimage import convolve, distance_transform_edt

    # distance of each background pixel to the nearest foreground pixel, and that pixel
    dist, (iy, ix) = distance_transform_edt(~gt, return_indices=True)
    err = np.abs(pred - gt)
    # pixel dependency: a background pixel takes the error at its nearest foreground pixel
    # before smoothing, so errors near the object's edge are judged together
    err_t = np.where(gt, err, err[iy, ix])
    smoothed = convolve(err_t, weights=_matlab_gaussian(7, 5.0), mode="constant", cval=0)
    err_min = np.where(gt & (smoothed < err), smoothed, err)
    # pixel importance: background errors count more the closer they are to the object
    importance = np.where(gt, 1.0, 2 - np.exp(np.log(0.5) / 5 * dist))
    ew = err_min * importance
    tp = np.sum(gt) - np.sum(ew[gt])
    fp = np.sum(ew[~gt])
    recall = 1 - np.mean(ew[gt])
    precision = tp / (tp + fp + EPS)
    return (1 + beta2) * recall * precision / (recall + beta2 * precision + EPS)


# --- the streaming class ---------------------------------------------------------------


def _squeeze(a):
    """Drop a trailing channel of 1: ``(H, W, 1)`` and ``(B, H, W, 1)`` maps."""
    return a[..., 0] if a.ndim in (3, 4) and a.shape[-1] == 1 else a


class SaliencyMetrics:
    """Streaming salient-object metrics over uint8 0–255 prediction and ground-truth maps.

    Matches ``pysodmetrics`` (``MAE``, ``Smeasure``, ``Emeasure``, ``Fmeasure``,
    ``WeightedFmeasure``) to float round-off: per-image scores averaged over images, threshold
    curves averaged per threshold before their max and mean (see the module docstring).

    Args:
        beta2: β² of F-β (0.3).
        alpha: S-measure's weight of the object-aware part (0.5).
        weighted_beta2: β² of weighted F-β (1.0, the reference's default).

    Example:
        sod = SaliencyMetrics()
        for prob, mask in zip(probabilities, masks):   # H×W each
            sod.update((prob * 255).round().astype("uint8"), mask)
        sod.result()["max_f_beta"]
    """

    def __init__(self, beta2: float = 0.3, alpha: float = 0.5, weighted_beta2: float = 1.0):
        self.beta2 = beta2
        self.alpha = alpha
        self.weighted_beta2 = weighted_beta2
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self._sums = {k: 0.0 for k in ("mae", "s_measure", "adaptive_e_measure", "adaptive_f_beta", "weighted_f_beta")}
        self._e_curve = np.zeros(THRESHOLDS)
        self._f_curve = np.zeros(THRESHOLDS)

    def update(self, pred, gt) -> None:
        """Add one map pair ``(H, W)`` (or ``(H, W, 1)``), or a batch ``(B, H, W)``.

        Args:
            pred: predicted saliency, uint8 0–255 (any numeric dtype is read on that scale).
            gt: ground truth, uint8 0–255 (foreground > 128) or bool.
        """
        pred, gt = _squeeze(np.asarray(pred)), _squeeze(np.asarray(gt))
        if pred.shape != gt.shape:
            raise KsegError(
                f"saliency prediction is {pred.shape} but its ground truth is {gt.shape}; resize the "
                "prediction to the mask's size (maps are H×W, or B×H×W for a batch)"
            )
        if pred.ndim == 3:
            for p, g in zip(pred, gt):
                self.update(p, g)
            return
        if pred.ndim != 2:
            raise KsegError(f"saliency maps must be H×W (or B×H×W), got shape {pred.shape}")
        p, g = prepare(pred, gt)
        counts = threshold_counts(p, g)
        self._sums["mae"] += mae(p, g)
        self._sums["s_measure"] += s_measure(p, g, self.alpha)
        self._sums["adaptive_e_measure"] += adaptive_e_measure(p, g)
        self._sums["adaptive_f_beta"] += adaptive_f_beta(p, g, self.beta2)
        self._sums["weighted_f_beta"] += weighted_f_beta(p, g, self.weighted_beta2)
        self._e_curve += e_measure_curve(p, g, counts)
        self._f_curve += f_beta_curve(p, g, self.beta2, counts)
        self.count += 1

    def curves(self) -> dict:
        """The averaged threshold curves, index i for threshold ``255 - i``:
        ``{"e_measure": (256,), "f_beta": (256,)}``."""
        n = max(self.count, 1)
        return {"e_measure": self._e_curve / n, "f_beta": self._f_curve / n}

    def result(self) -> dict:
        """Scores over every map seen so far (NaN before the first ``update``).

        Returns:
            dict of floats with the keys ``mae``, ``s_measure``, ``max_e_measure``,
            ``mean_e_measure``, ``adaptive_e_measure``, ``max_f_beta``, ``mean_f_beta``,
            ``adaptive_f_beta``, ``weighted_f_beta``.
        """
        if not self.count:
            return {k: float("nan") for k in KEYS}
        n = self.count
        c = self.curves()
        out = {k: float(v / n) for k, v in self._sums.items()}
        out.update(max_e_measure=float(c["e_measure"].max()), mean_e_measure=float(c["e_measure"].mean()),
                   max_f_beta=float(c["f_beta"].max()), mean_f_beta=float(c["f_beta"].mean()))
        return {k: out[k] for k in KEYS}
