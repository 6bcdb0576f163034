"""Data: the in-memory :class:`Dataset`, the built-in sources (a registry), user arrays and
tables, and user splits as streams (:func:`stream_splits`). Every draw takes an explicit seed;
nothing is downloaded."""

from wdlab.data.arrays import from_arrays, infer_task, shuffle_split, split_indices
from wdlab.data.dataset import Dataset
from wdlab.data.sources import (
    SKLEARN_SETS,
    SOURCES,
    Source,
    d2l,
    digits_images,
    load,
    mnist1d,
    seed_noise,
    seed_noise_tensors,
    sklearn_dataset,
    teacher_classification,
    teacher_regression,
)
from wdlab.data.stream import Stream, StreamError, TensorStream
from wdlab.data.streamed import StreamedData, stream_splits
from wdlab.data.tables import FILE_SUFFIXES, is_table_path, read_table
from wdlab.data.user import from_function, from_splits, is_data_function
from wdlab.tasks import TASKS

__all__ = [
    "FILE_SUFFIXES",
    "SKLEARN_SETS",
    "SOURCES",
    "TASKS",
    "Dataset",
    "Source",
    "Stream",
    "StreamError",
    "StreamedData",
    "TensorStream",
    "d2l",
    "digits_images",
    "from_arrays",
    "from_function",
    "from_splits",
    "infer_task",
    "is_data_function",
    "is_table_path",
    "load",
    "mnist1d",
    "read_table",
    "seed_noise",
    "seed_noise_tensors",
    "shuffle_split",
    "sklearn_dataset",
    "split_indices",
    "stream_splits",
    "teacher_classification",
    "teacher_regression",
]
