"""Mask R-CNN: encoder + FPN + RPN + RoIAlign + box and mask heads, trainable with ``model.fit``."""

from __future__ import annotations

import keras
from keras import ops

from kseg.errors import KsegError
from kseg.models.encoders import build_encoder
from kseg.models.mask_rcnn.boxes import clip_boxes, decode_boxes, make_anchors
from kseg.models.mask_rcnn.fpn import FPN_STRIDES, build_fpn, tiny_encoder
from kseg.models.mask_rcnn.heads import box_head, mask_head
from kseg.models.mask_rcnn.roi_align import fpn_roi_align
from kseg.models.mask_rcnn.rpn import nms_padded, propose, rpn_head
from kseg.models.mask_rcnn.targets import roi_targets, rpn_targets
from kseg.ops import roi_align

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
LOSS_NAMES = ("loss", "rpn_cls", "rpn_box", "cls", "box", "mask")


def _smooth_l1(x, beta):
    ax = ops.abs(x)
    return ops.where(ax < beta, 0.5 * ax * ax / beta, ax - 0.5 * beta)


def _safe_div(a, b):
    return a / ops.maximum(b, 1.0)


@keras.saving.register_keras_serializable(package="kseg")
class MaskRCNN(keras.Model):
    """Mask R-CNN with an FPN, for instance segmentation.

    ``model(images)`` runs inference on a batch of float32 RGB 0..255 images of
    ``input_shape`` and returns fixed-size, padded detections: ``boxes`` ``(B, D, 4)``
    ``(x1, y1, x2, y2)`` pixels, ``scores`` ``(B, D)`` (0 in padded slots), ``classes``
    ``(B, D)`` int32 (1..num_classes-1, 0 in padded slots), ``masks`` ``(B, D, 28, 28)``
    probabilities inside each box (paste them with
    ``kseg.runtime.paste_masks``) and ``num_detections`` ``(B,)``.

    ``model.fit`` trains it on ``(images, {"boxes": (B, M, 4), "classes": (B, M) int (0 =
    padding), "masks": (B, M, H, W) 0/1})`` batches (``kseg.data.instances.make_instance_dataset``)
    with ``L = L_rpn_cls + L_rpn_box + L_cls + L_box + L_mask``; compile it with only an
    optimizer. Keras' own training step runs it on any backend: ``model(images,
    training=True)`` returns the backbone's outputs (FPN levels and RPN maps) and
    ``compute_loss`` turns them and the targets into the losses (under JAX, the stateless step).

    Args:
        num_classes: classes including background (2 for person/background).
        input_shape: ``(H, W, 3)``, H and W multiples of 64 (P6's stride).
        encoder: a name from ``kseg.models.encoders.ENCODERS`` or ``"tiny"`` (plain convolutions,
            for tests).
        pretrained: load the encoder's shipped ImageNet weights (efficientnet_lite0, efficientnet_lite2).
        encoder_weights: a local weights file for the encoder (see ``build_encoder``).
        train_bn: update the encoder's BatchNormalization statistics in training (off: frozen
            BN, as usual for Mask R-CNN's small batches).
        fpn_channels: channels of the FPN levels and the RPN convolution (256 in the paper).
        anchor_sizes: anchor size of each level P2…P6.
        anchor_ratios: anchor aspect ratios ``h / w``.
        rpn_pre_nms_train, rpn_post_nms_train: proposals before/after NMS per image in training.
        rpn_pre_nms_test, rpn_post_nms_test: the same at inference.
        rpn_nms_iou: RPN NMS threshold.
        rpn_batch_size, rpn_positive_fraction: anchors sampled per image for the RPN loss.
        roi_batch_size, roi_positive_fraction: RoIs sampled per image for the heads (512, 0.25
            in the paper).
        box_head_dim: width of the box head's fully connected layers.
        mask_head_channels, mask_head_convs: the mask head's convolutions.
        score_threshold: detections scoring below this are dropped.
        nms_iou: per-class NMS threshold of the detections.
        max_detections: detections per image (D); the mask head runs on these boxes, so its
            cost grows with D.
        roi_sampling_ratio: RoIAlign samples per bin along each axis for the box and mask heads
            (2 as in Detectron's fixed setting; 1 reads 4× fewer feature values).

    Example:
        model = MaskRCNN(num_classes=2, input_shape=(320, 320, 3), pretrained=True, fpn_channels=128)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9, clipnorm=10.0))
        model.fit(make_instance_dataset(instances, size=320, batch_size=2), epochs=10)
        det = model(images)   # dict of boxes, scores, classes, masks, num_detections

    Reference:
        He et al., "Mask R-CNN", ICCV 2017; Ren et al., "Faster R-CNN", NeurIPS 2015; Lin et al.,
        "Feature Pyramid Networks for Object Detection", CVPR 2017.
    """

    def __init__(self, num_classes=2, input_shape=(320, 320, 3), encoder="efficientnet_lite0", pretrained=False,
                 encoder_weights=None, train_bn=False, fpn_channels=256, anchor_sizes=(32, 64, 128, 256, 512),
                 anchor_ratios=(0.5, 1.0, 2.0), rpn_pre_nms_train=2000, rpn_post_nms_train=1000,
                 rpn_pre_nms_test=1000, rpn_post_nms_test=1000, rpn_nms_iou=0.7, rpn_batch_size=256,
                 rpn_positive_fraction=0.5, roi_batch_size=512, roi_positive_fraction=0.25, box_head_dim=1024,
                 mask_head_channels=256, mask_head_convs=4, score_threshold=0.05, nms_iou=0.5,
                 max_detections=100, roi_sampling_ratio=2, **kwargs):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[-1] != 3 or any(v is None or v % 64 for v in input_shape[:2]):
            raise KsegError(
                f"MaskRCNN input_shape={input_shape}: use a fixed (H, W, 3) with H and W multiples of 64, e.g. (320, 320, 3)"
            )
        if num_classes < 2:
            raise KsegError(f"MaskRCNN num_classes={num_classes}: count the background too (2 for one object class)")
        super().__init__(name=kwargs.pop("name", "mask_rcnn"), **kwargs)

        # === Config ===
        self.num_classes = int(num_classes)
        self.image_shape = input_shape
        self.encoder = encoder
        self.pretrained = pretrained
        self.encoder_weights = encoder_weights
        self.train_bn = train_bn
        self.fpn_channels = int(fpn_channels)
        self.anchor_sizes = tuple(anchor_sizes)
        self.anchor_ratios = tuple(float(r) for r in anchor_ratios)
        self.rpn_pre_nms_train = int(rpn_pre_nms_train)
        self.rpn_post_nms_train = int(rpn_post_nms_train)
        self.rpn_pre_nms_test = int(rpn_pre_nms_test)
        self.rpn_post_nms_test = int(rpn_post_nms_test)
        self.rpn_nms_iou = float(rpn_nms_iou)
        self.rpn_batch_size = int(rpn_batch_size)
        self.rpn_positive_fraction = float(rpn_positive_fraction)
        self.roi_batch_size = int(roi_batch_size)
        self.roi_positive_fraction = float(roi_positive_fraction)
        self.box_head_dim = int(box_head_dim)
        self.mask_head_channels = int(mask_head_channels)
        self.mask_head_convs = int(mask_head_convs)
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.max_detections = int(max_detections)
        self.roi_sampling_ratio = int(roi_sampling_ratio)
        self.anchors = make_anchors(input_shape[:2], FPN_STRIDES, self.anchor_sizes, self.anchor_ratios)

        # === Layers === (three functional parts: backbone = encoder + FPN + RPN head, box head,
        # mask head; the proposal, sampling and post-processing steps between them hold no weights)
        inputs = keras.Input(input_shape, name="image")
        if encoder == "tiny":
            pyramid = tiny_encoder(inputs)
        else:
            pyramid = build_encoder(encoder, inputs, pretrained=pretrained, weights=encoder_weights)
        fpn = build_fpn(pyramid, self.fpn_channels)
        logits, deltas = rpn_head(fpn, len(self.anchor_ratios), self.fpn_channels)
        outputs = {k.lower(): v for k, v in fpn.items()}
        outputs.update(rpn_logits=logits, rpn_deltas=deltas)
        self.backbone = keras.Model(inputs, outputs, name="backbone")
        self.box_head = box_head(self.num_classes, self.fpn_channels, 7, self.box_head_dim)
        self.mask_head = mask_head(self.num_classes, self.fpn_channels, 14, self.mask_head_channels, self.mask_head_convs)
        self.seed_generator = keras.random.SeedGenerator(0)
        self._trackers = {k: keras.metrics.Mean(name=k) for k in LOSS_NAMES}
        self.built = True

    # === Config ===
    def get_config(self):
        return {
            "name": self.name, "num_classes": self.num_classes, "input_shape": self.image_shape,
            "encoder": self.encoder, "pretrained": self.pretrained, "encoder_weights": self.encoder_weights,
            "train_bn": self.train_bn, "fpn_channels": self.fpn_channels, "anchor_sizes": self.anchor_sizes,
            "anchor_ratios": self.anchor_ratios, "rpn_pre_nms_train": self.rpn_pre_nms_train,
            "rpn_post_nms_train": self.rpn_post_nms_train, "rpn_pre_nms_test": self.rpn_pre_nms_test,
            "rpn_post_nms_test": self.rpn_post_nms_test, "rpn_nms_iou": self.rpn_nms_iou,
            "rpn_batch_size": self.rpn_batch_size, "rpn_positive_fraction": self.rpn_positive_fraction,
            "roi_batch_size": self.roi_batch_size, "roi_positive_fraction": self.roi_positive_fraction,
            "box_head_dim": self.box_head_dim, "mask_head_channels": self.mask_head_channels,
            "mask_head_convs": self.mask_head_convs, "score_threshold": self.score_threshold,
            "nms_iou": self.nms_iou, "max_detections": self.max_detections,
            "roi_sampling_ratio": self.roi_sampling_ratio,
        }

    @classmethod
    def from_config(cls, config):
        """Rebuild the architecture without loading encoder weights (a ``.keras`` file brings its own)."""
        config = dict(config)
        kept = {k: config.pop(k, None) for k in ("pretrained", "encoder_weights")}
        model = cls(**config)
        model.pretrained, model.encoder_weights = kept["pretrained"], kept["encoder_weights"]
        return model

    # --- parts ---------------------------------------------------------------------
    def _levels(self, feats):
        return [feats[k] for k in ("p2", "p3", "p4", "p5")]

    def _pool(self, feats, boxes, size):
        """``(B, R, 4)`` boxes → ``(B·R, size, size, C)`` multi-level RoIAlign features."""
        b, r = ops.shape(boxes)[0], ops.shape(boxes)[1]
        flat = ops.reshape(boxes, (-1, 4))
        idx = ops.reshape(ops.repeat(ops.arange(b, dtype="int32")[:, None], r, axis=1), (-1,))
        return fpn_roi_align(self._levels(feats), flat, idx, FPN_STRIDES[:4], size,
                             sampling_ratio=self.roi_sampling_ratio)

    def _mask_logits(self, feats, boxes, classes):
        """Mask logits ``(B, R, 28, 28)`` of each box's class."""
        b, r = ops.shape(boxes)[0], ops.shape(boxes)[1]
        logits = self.mask_head(self._pool(feats, boxes, 14))  # (B·R, 28, 28, C)
        cls = ops.reshape(ops.cast(classes, "int32"), (-1, 1, 1, 1))
        picked = ops.take_along_axis(logits, ops.broadcast_to(cls, ops.shape(logits)[:3] + (1,)), axis=-1)
        return ops.reshape(picked, (b, r, 28, 28))

    # --- training ------------------------------------------------------------------
    def compute_losses(self, images, targets, training=True):
        """The five Mask R-CNN losses and their sum on one batch.

        Args:
            images: ``(B, H, W, 3)`` float32 RGB 0..255.
            targets: dict of ``boxes`` ``(B, M, 4)``, ``classes`` ``(B, M)`` (0 = padding) and
                ``masks`` ``(B, M, H, W)``.
            training: run the encoder's BatchNormalization in training mode (only with
                ``train_bn``).

        Returns:
            dict ``loss, rpn_cls, rpn_box, cls, box, mask`` of scalars.
        """
        return self._loss_terms(self._backbone_outputs(images, training), targets)

    def _backbone_outputs(self, images, training):
        return self.backbone(ops.cast(images, "float32"), training=bool(training and self.train_bn))

    def _loss_terms(self, feats, targets):
        h, w = self.image_shape[:2]
        gt_boxes = ops.cast(targets["boxes"], "float32")
        gt_classes = ops.cast(targets["classes"], "int32")
        gt_masks = targets["masks"]
        gt_valid = gt_classes > 0
        logits, deltas = feats["rpn_logits"], feats["rpn_deltas"]

        # RPN
        rt = rpn_targets(self.anchors, gt_boxes, gt_valid, self.rpn_batch_size, self.rpn_positive_fraction,
                         seed=self.seed_generator)
        n_rpn = ops.sum(rt["sampled"])
        bce = ops.binary_crossentropy(rt["labels"], logits, from_logits=True)
        rpn_cls = _safe_div(ops.sum(bce * rt["sampled"]), n_rpn)
        rpn_box = _safe_div(ops.sum(_smooth_l1(deltas - rt["deltas"], 1.0 / 9.0) * rt["positive"][..., None]), n_rpn)

        # RoI heads on sampled proposals
        proposals, _, pvalid = propose(ops.stop_gradient(logits), ops.stop_gradient(deltas), self.anchors, (h, w),
                                       self.rpn_pre_nms_train, self.rpn_post_nms_train, self.rpn_nms_iou)
        t = roi_targets(ops.stop_gradient(proposals), pvalid, gt_boxes, gt_classes, self.roi_batch_size,
                        self.roi_positive_fraction, box_weights=BOX_WEIGHTS, seed=self.seed_generator)
        cls_logits, box_deltas = self.box_head(self._pool(feats, t["rois"], 7))
        classes = ops.reshape(t["classes"], (-1,))
        valid = ops.reshape(t["valid"], (-1,))
        n_roi = ops.sum(valid)
        ce = ops.sparse_categorical_crossentropy(classes, cls_logits, from_logits=True)
        cls_loss = _safe_div(ops.sum(ce * valid), n_roi)
        box_deltas = ops.reshape(box_deltas, (-1, self.num_classes, 4))
        picked = ops.take_along_axis(box_deltas, ops.broadcast_to(classes[:, None, None], (ops.shape(classes)[0], 1, 4)), axis=1)[:, 0]
        fg = ops.cast(classes > 0, "float32")
        box_loss = _safe_div(ops.sum(_smooth_l1(picked - ops.reshape(t["deltas"], (-1, 4)), 1.0) * fg[:, None]), n_roi)

        # masks: positives come first among the sampled RoIs
        p = max(1, int(self.roi_batch_size * self.roi_positive_fraction))
        rois_p = t["rois"][:, :p]
        cls_p = t["classes"][:, :p]
        mask_logits = self._mask_logits(feats, rois_p, cls_p)  # (B, p, 28, 28)
        b = ops.shape(gt_boxes)[0]
        m = ops.shape(gt_boxes)[1]
        masks_flat = ops.reshape(ops.cast(gt_masks, "float32"), (-1, h, w, 1))
        src = ops.reshape(ops.arange(b, dtype="int32")[:, None] * m + ops.cast(t["gt_index"][:, :p], "int32"), (-1,))
        mask_t = roi_align(masks_flat, ops.reshape(rois_p, (-1, 4)), src, 28, spatial_scale=1.0, sampling_ratio=2, aligned=True)
        mask_t = ops.reshape(ops.stop_gradient(mask_t), (b, p, 28, 28))
        pos = ops.cast(cls_p > 0, "float32")
        mbce = ops.mean(ops.binary_crossentropy(mask_t, mask_logits, from_logits=True), axis=(2, 3))
        mask_loss = _safe_div(ops.sum(mbce * pos), ops.sum(pos))

        total = rpn_cls + rpn_box + cls_loss + box_loss + mask_loss
        return {"loss": total, "rpn_cls": rpn_cls, "rpn_box": rpn_box, "cls": cls_loss, "box": box_loss, "mask": mask_loss}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """``fit``'s loss: the losses of ``compute_losses`` from the backbone outputs in ``y_pred``
        (``call`` in training mode), recorded in the loss metrics; returns their sum."""
        feats = y_pred if isinstance(y_pred, dict) and "rpn_logits" in y_pred else self._backbone_outputs(x, training)
        losses = self._loss_terms(feats, y)
        for k, tracker in self._trackers.items():
            tracker.update_state(losses[k])
        return losses["loss"]

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return {k: tracker.result() for k, tracker in self._trackers.items()}

    @property
    def metrics(self):
        return list(self._trackers.values())

    # --- inference -----------------------------------------------------------------
    def call(self, images, training=False):
        if training:  # fit's step: the backbone's outputs, which compute_loss turns into the losses
            return self._backbone_outputs(images, training)
        h, w = self.image_shape[:2]
        images = ops.cast(images, "float32")
        feats = self.backbone(images, training=False)
        proposals, _, pvalid = propose(feats["rpn_logits"], feats["rpn_deltas"], self.anchors, (h, w),
                                       self.rpn_pre_nms_test, self.rpn_post_nms_test, self.rpn_nms_iou)
        b, p, c = ops.shape(proposals)[0], ops.shape(proposals)[1], self.num_classes
        cls_logits, box_deltas = self.box_head(self._pool(feats, proposals, 7))
        probs = ops.reshape(ops.softmax(cls_logits, axis=-1), (b, p, c))[:, :, 1:]
        probs = probs * ops.cast(pvalid, "float32")[..., None]
        box_deltas = ops.reshape(box_deltas, (b, p, c, 4))[:, :, 1:]
        boxes = decode_boxes(box_deltas, ops.repeat(proposals[:, :, None, :], c - 1, axis=2), BOX_WEIGHTS)
        boxes = clip_boxes(boxes, (h, w))
        boxes = ops.reshape(boxes, (b, p * (c - 1), 4))
        scores = ops.reshape(probs, (b, p * (c - 1)))
        labels = ops.reshape(ops.tile(ops.arange(1, c, dtype="int32")[None, None, :], (b, p, 1)), (b, p * (c - 1)))
        tiny = ops.logical_or(boxes[..., 2] - boxes[..., 0] < 1e-2, boxes[..., 3] - boxes[..., 1] < 1e-2)
        scores = ops.where(tiny, 0.0, scores)
        # per-class NMS in one call: boxes of different classes are moved apart so they never overlap
        shift = ops.cast(labels, "float32")[..., None] * float(max(h, w) + 1)
        keep, valid = nms_padded(boxes + shift, scores, self.max_detections, self.nms_iou, self.score_threshold)
        det_boxes = ops.take_along_axis(boxes, ops.repeat(keep[..., None], 4, axis=-1), axis=1)
        det_scores = ops.where(valid, ops.take_along_axis(scores, keep, axis=1), 0.0)
        det_classes = ops.where(valid, ops.take_along_axis(labels, keep, axis=1), 0)
        masks = ops.sigmoid(self._mask_logits(feats, det_boxes, det_classes))
        return {
            "boxes": det_boxes,
            "scores": det_scores,
            "classes": det_classes,
            "masks": masks,
            "num_detections": ops.sum(ops.cast(valid, "int32"), axis=1),
        }
