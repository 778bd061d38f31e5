"""The inference layer: semantic and instance segmentation models on LiteRT, and their cards.

``Segmenter(path).segment(rgb)`` runs a semantic model (``segmenter``); ``load_instance_model``
and ``detect_instances`` run a Mask R-CNN (``instances``); ``combine_panoptic`` merges the two
into one panoptic map (``panoptic``); ``cards`` reads model cards and checks
``.tflite`` files. Pre- and post-processing (resize, quantized I/O, softmax, letterbox, mask
pasting) live here and nowhere else. Importing this package, and running a ``.tflite`` file,
imports neither Keras nor TensorFlow; a ``.keras`` file loads Keras when it is opened.

Example:
    from kseg.runtime import Segmenter
    seg = Segmenter("exports/portrait.tflite", num_threads=2)
    person = seg.segment(rgb).category_mask == seg.person_index
"""

from kseg.runtime.cards import (
    CARD_FORMAT,
    TFLITE_IDENTIFIER,
    card_path,
    check_tflite_file,
    nonbuiltin_ops,
    read_card,
    tflite_ops,
)
from kseg.runtime.instances import (
    INSTANCE_HINT,
    InstanceModel,
    TFLiteMaskRCNN,
    detect_instances,
    load_instance_model,
    model_kind,
    paste_masks,
)
from kseg.runtime.panoptic import PanopticResult, combine_panoptic, instance_colors
from kseg.runtime.segmenter import SegmentationResult, Segmenter

__all__ = [
    "CARD_FORMAT", "INSTANCE_HINT", "InstanceModel", "PanopticResult", "SegmentationResult", "Segmenter",
    "TFLITE_IDENTIFIER", "TFLiteMaskRCNN", "card_path", "check_tflite_file", "combine_panoptic", "detect_instances",
    "instance_colors", "load_instance_model", "model_kind", "nonbuiltin_ops", "paste_masks", "read_card", "tflite_ops",
]
