"""Data layer: readers (formats → SegDataset), transforms, tf.data pipeline, synthetic data."""

from kseg.data.readers import SegDataset, SegSample, concat, open_dataset, people_dataset

__all__ = ["SegDataset", "SegSample", "concat", "open_dataset", "people_dataset"]
