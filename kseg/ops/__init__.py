"""Backend ops shared by several models (``keras.ops`` only)."""

from kseg.ops.roi_align import fpn_level, roi_align, roi_pool

__all__ = ["fpn_level", "roi_align", "roi_pool"]
