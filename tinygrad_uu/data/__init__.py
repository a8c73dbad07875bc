"""Data: the course's data sets as numpy arrays, batching, and augmentation.

- ``download``: where data lives (``data_root``) and ``fetch`` (download + checksum)
- ``datasets``: ``auto_mpg``, ``mnist``, ``warwick``
- ``loader``: ``Dataset``, ``TensorDataset``, ``DataLoader``
- ``transforms``: random shifts/rotations for digits, joint flips/turns/crops for segmentation
- ``detection``: images with boxes (digits on canvases, WARWICK glands, YOLO folders) and
  ``DetectionAugment``, which moves the boxes with the pixels
- ``patches``: patch classification (WARWICK patches split by image, the PCam Kaggle
  folder), dihedral transforms and colour jitter

Nothing here knows about Tensor: every function takes and returns numpy arrays.
"""
from .datasets import AutoMPG, auto_mpg, mnist, read_idx, warwick
from .download import CorruptFileError, DataNotFoundError, data_root, fetch
from .detection import (DetectionAugment, DetectionSet, digit_canvases, gland_boxes,
                        load_detection_data, make_digit_canvases, read_yolo_folder)
from .loader import DataLoader, Dataset, TensorDataset
from .patches import (PatchAugment, PatchSet, class_balance, colour_jitter, cut_patches, dihedral,
                      pcam_kaggle, random_dihedral, read_pcam_folder, to_float, warwick_patches)
from .transforms import (DigitAugment, SegmentationAugment, random_crop, random_flip,
                         random_rot90, random_rotation, random_shift)

__all__ = [
    "fetch", "data_root", "DataNotFoundError", "CorruptFileError",
    "auto_mpg", "AutoMPG", "mnist", "read_idx", "warwick",
    "Dataset", "TensorDataset", "DataLoader",
    "random_shift", "random_rotation", "DigitAugment",
    "random_flip", "random_rot90", "random_crop", "SegmentationAugment",
    "DetectionSet", "DetectionAugment", "digit_canvases", "make_digit_canvases", "gland_boxes",
    "read_yolo_folder", "load_detection_data",
    "PatchSet", "cut_patches", "warwick_patches", "class_balance", "read_pcam_folder",
    "pcam_kaggle", "to_float", "dihedral", "random_dihedral", "colour_jitter", "PatchAugment",
]
