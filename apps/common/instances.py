"""Which person is which, frame after frame: stable instance ids and the semantic mask split among people.

The instance model runs a few times a second (``apps.common.detect``) and draws coarse masks
(28×28 per box); the semantic model runs on every frame with sharp edges. The mask overlay's
instance colours take the best of both:

1. **Detections → people** (``InstanceTracks``): each detection is matched to a person of the
   previous detection by mask IoU (greedy, best pair first); a matched person keeps its id and
   colour, an unmatched detection is a new person and takes the first colour no one shown is
   using, a person missed by ``hold`` detections in a row is let go (until then their last mask
   still counts, so a missed detection does not flip a colour).
2. **People → pixels** (``split_people``): each connected region of the current semantic
   foreground that one person's instance mask overlaps is that person's; a region several
   people overlap (people touching) is split pixel by pixel, each to the nearest instance mask;
   a region no instance touches (a person the detector missed) is left to the semantic
   overlay. So the outline is the semantic model's, of this frame, even between detections
   (the semantic region carries the motion; the instance masks only say whose it is).

Example:
    tracks = InstanceTracks()
    people = tracks.update(masks, scores)          # (D, h, w) bool, best score first
    seeds = tracks.seeds((h, w))                    # (h, w) int32: 1 + index in tracks.people
    labels = split_people(foreground, seeds)        # (h, w) int32, 0: nobody
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def mask_iou(a, b) -> np.ndarray:
    """IoU of ``(N, h, w)`` and ``(M, h, w)`` boolean masks → ``(N, M)``."""
    a = np.asarray(a, bool).reshape(len(a), -1).astype(np.float32)
    b = np.asarray(b, bool).reshape(len(b), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return inter / np.maximum(union, 1.0)


@dataclass
class Person:
    """One person followed across detections.

    Attributes:
        id: 1, 2, … in order of first appearance (never reused).
        slot: colour index; the smallest one free when the person appeared.
        mask: the last instance mask (working resolution, bool).
        score: the last detection score.
        missed: detections in a row without this person.
    """

    id: int
    slot: int
    mask: np.ndarray
    score: float
    missed: int = 0


class InstanceTracks:
    """People across detections by mask IoU (see the module docstring).

    Args:
        min_iou: a detection continues a person when their masks overlap at least this much.
        hold: detections in a row without a person before it is let go.

    Attributes:
        people: the people shown, in order of appearance.

    Example:
        tracks = InstanceTracks(min_iou=0.3, hold=2)
        tracks.update(masks_t0, scores_t0)
        tracks.update(masks_t1, scores_t1)   # the same people keep their ids and colours
    """

    def __init__(self, min_iou: float = 0.3, hold: int = 2):
        self.min_iou = float(min_iou)
        self.hold = max(1, int(hold))
        self.people: list[Person] = []
        self._next_id = 1

    def reset(self):
        """Forget everyone (ids start again at 1)."""
        self.people = []
        self._next_id = 1

    def update(self, masks, scores) -> list[Person]:
        """Match one detection's ``(D, h, w)`` masks (and ``(D,)`` scores) to the people; returns ``people``."""
        masks = np.asarray(masks, bool)
        scores = np.asarray(scores, np.float32).reshape(-1)
        matched_det, matched_person = set(), set()
        if self.people and len(masks):
            if self.people[0].mask.shape != masks.shape[1:]:  # another frame size: start over
                self.reset()
            else:
                iou = mask_iou(np.stack([p.mask for p in self.people]), masks)
                for flat in np.argsort(-iou, axis=None, kind="stable"):
                    i, j = divmod(int(flat), iou.shape[1])
                    if iou[i, j] < self.min_iou:
                        break
                    if i in matched_person or j in matched_det:
                        continue
                    p = self.people[i]
                    p.mask, p.score, p.missed = masks[j], float(scores[j]), 0
                    matched_person.add(i)
                    matched_det.add(j)
        kept = []
        for i, p in enumerate(self.people):
            if i not in matched_person:
                p.missed += 1
                if p.missed >= self.hold:
                    continue
            kept.append(p)
        self.people = kept
        for j in range(len(masks)):
            if j in matched_det or not masks[j].any():
                continue
            used = {p.slot for p in self.people}
            slot = next(s for s in range(len(used) + 1) if s not in used)
            self.people.append(Person(self._next_id, slot, masks[j], float(scores[j])))
            self._next_id += 1
        return self.people

    def seeds(self, shape) -> np.ndarray:
        """``(h, w)`` int32: ``1 + k`` where person ``k``'s mask is, 0 elsewhere.

        People held since a missed detection are painted first, so the masks of this detection
        win where the two overlap.
        """
        out = np.zeros(shape, np.int32)
        order = sorted(range(len(self.people)), key=lambda k: -self.people[k].missed)
        for k in order:
            out[self.people[k].mask] = k + 1
        return out


def nearest_seed(seeds) -> np.ndarray:
    """``(h, w)`` int32: for every pixel the value of the nearest non-zero pixel of ``seeds`` (L2).

    All zeros when ``seeds`` has no non-zero pixel.
    """
    import cv2

    seeds = np.asarray(seeds, np.int32)
    where = seeds > 0
    if not where.any():
        return np.zeros_like(seeds)
    # DIST_LABEL_PIXEL: every zero pixel of the input (a seed pixel here) gets a label of its
    # own, and every other pixel the label of the nearest one
    _, lab = cv2.distanceTransformWithLabels((~where).astype(np.uint8), cv2.DIST_L2, 3,
                                             labelType=cv2.DIST_LABEL_PIXEL)
    lut = np.zeros(int(lab.max()) + 1, np.int32)
    lut[lab[where]] = seeds[where]
    return lut[lab]


def split_people(foreground, seeds, nearest=None, reach: int = 2, share: float = 0.25) -> np.ndarray:
    """Share a semantic foreground among people: whole regions to their one person, else pixel by pixel.

    Each connected region of the foreground is looked at with the people's seeds (instance
    masks) in and near it:

    - no seed: nobody's (0);
    - one person's seed, or one person's and others' covering at most ``share`` of as many
      pixels (a mask of a few frames ago overlapping a neighbour who moved): the whole region
      is that person's;
    - several people's (people touching): each pixel goes to the nearest seed.

    Args:
        foreground: ``(h, w)`` bool, the semantic person mask.
        seeds: ``(h, w)`` int32 person labels (``InstanceTracks.seeds``), 0 for none.
        nearest: ``nearest_seed(seeds)`` if already computed (it changes only with the seeds).
        reach: seeds count this many pixels beyond their masks (the semantic mask of this
            frame and an instance mask of a few frames ago need not touch).
        share: see above.

    Returns:
        ``(h, w)`` int32: the person label of each foreground pixel, 0 for nobody.

    Example:
        split_people(fg, seeds)     # two touching people: split where their instance masks meet
    """
    import cv2

    fg = np.asarray(foreground, bool)
    seeds = np.asarray(seeds, np.int32)
    people = int(seeds.max(initial=0))
    if not fg.any() or people == 0:
        return np.zeros(fg.shape, np.int32)
    n, comp = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
    grown = seeds
    if reach > 0:  # labels spread by `reach` pixels where there is none (a larger label wins a tie)
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
        grown = np.where(seeds > 0, seeds, cv2.dilate(seeds.astype(np.float32), k).astype(np.int32))
    at = (grown > 0) & (comp > 0)
    counts = np.bincount(comp[at] * (people + 1) + grown[at], minlength=n * (people + 1)).reshape(n, people + 1)[:, 1:]
    order = np.sort(counts, axis=1)
    best = order[:, -1]
    second = order[:, -2] if people > 1 else np.zeros(n, np.int64)
    owner = np.where((best > 0) & (second <= share * best), np.argmax(counts, axis=1) + 1, 0)
    shared = (best > 0) & (owner == 0)
    owner[0], shared[0] = 0, False
    labels = owner[comp]
    if shared.any():
        if nearest is None:
            nearest = nearest_seed(seeds)
        split = shared[comp]
        labels[split] = nearest[split]
    return labels.astype(np.int32)
