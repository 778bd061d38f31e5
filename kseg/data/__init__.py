"""Data layer: readers (formats → SegDataset), compositing (people on person-free backgrounds),
transforms, tf.data pipeline, synthetic data."""

from kseg.data.readers import (
    InstanceDataset,
    SegDataset,
    SegSample,
    concat,
    instances_from_semantic,
    open_composite,
    open_composite_instances,
    open_dataset,
    open_instances,
    people_dataset,
)

__all__ = [
    "InstanceDataset", "SegDataset", "SegSample", "concat", "instances_from_semantic", "open_composite",
    "open_composite_instances", "open_dataset", "open_instances", "people_dataset",
]
