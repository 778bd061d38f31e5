"""Data layer: readers (formats → SegDataset), transforms, tf.data pipeline, synthetic data."""

from kseg.data.readers import (
    InstanceDataset,
    SegDataset,
    SegSample,
    concat,
    instances_from_semantic,
    open_dataset,
    open_instances,
    people_dataset,
)

__all__ = [
    "InstanceDataset", "SegDataset", "SegSample", "concat", "instances_from_semantic", "open_dataset",
    "open_instances", "people_dataset",
]
