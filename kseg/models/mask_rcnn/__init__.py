"""Mask R-CNN (instance segmentation) in Keras 3: FPN, RPN, multi-level RoIAlign, box and mask heads.

Example:
    from kseg.models.mask_rcnn import MaskRCNN
    model = MaskRCNN(num_classes=2, input_shape=(320, 320, 3), pretrained=True, fpn_channels=128)
"""

from kseg.models.mask_rcnn.boxes import box_iou, decode_boxes, encode_boxes, make_anchors
from kseg.models.mask_rcnn.model import MaskRCNN
from kseg.models.mask_rcnn.roi_align import fpn_roi_align, multilevel_roi_align

__all__ = ["MaskRCNN", "box_iou", "decode_boxes", "encode_boxes", "fpn_roi_align", "make_anchors", "multilevel_roi_align"]
