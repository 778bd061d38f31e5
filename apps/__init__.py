"""Real-time apps on top of ``kseg.runtime``: portrait blur, background swap, virtual try-on.

``python -m apps.webcam`` (or ``kseg demo`` for the bundled clip) wires a source (camera, video,
image folder) through a segmenter, a mask refiner and an effect into sinks (window, video file,
PNG frames, virtual camera). The parts are importable on their own:

Example:
    from kseg.runtime import Segmenter
    from apps.common.refine import MaskEstimator
    from apps.effects import make_effect

    est = MaskEstimator(Segmenter("exports/portrait.tflite"), names=("person",))
    effect = make_effect("portrait", strength=0.6)
    out = effect.apply(rgb, est(rgb))
"""
