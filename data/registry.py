"""DATASETS: data.name -> loader(data_cfg, eval_split, train_transform, eval_transform, with_train=True),
which returns (the whole training split, the evaluation split), each a `LabelledDataset`;
with_train=False returns (None, the evaluation split) and reads of the training split only what the
evaluation split needs (eval.py). Each loader registers in its own module of data/ (cifar.py,
digits.py, image_folder.py, split_lists.py); importing `data` imports every module, so a new one is
found without being listed anywhere.

Facts a registration states, read by the config and the builder without loading anything:
  help          one line on what it is (docs/CONFIG.md lists them)
  split_lists   reads 'path label' list files (data.train_list ...; has a val split)
  long_tailed   comes imbalanced: data.profile must be none
  in_memory     held as uint8 arrays (PIL transforms; data.decoder concerns files only)
  max_per_class n_max of its long-tailed version when data.max_per_class is 0 (default: the
                most populated class)
  num_classes   C, where the dataset fixes it (tools/model_info.py reads it)
  reads_root    False where data.root means nothing (embedded data): a classifier stage then
                does not compare it with its parent's (default True)
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from core.errors import UserError
from core.registry import Registry

DATASETS = Registry("dataset", "data.name")


@runtime_checkable
class LabelledDataset(Protocol):
    """What a loader returns and the engine reads: a map-style dataset whose labels are known
    without loading an image (samplers and class counts read `targets` alone, engine/run.py)."""

    targets: list[int]          # N class indices in 0..C-1, one per sample
    classes: list[str]          # C class names; index c names class c (per-class reports)
    num_classes: int            # C, also the classes without a sample: class_counts(targets, C)

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[object, int]:
        """(the transformed image, its class index)."""

    def subset(self, indices: Sequence[int]) -> LabelledDataset:
        """The given samples only, in the given order (the imbalance profile's pick)."""


def only_test_split(data_cfg, split: str) -> None:
    """A dataset with train and test splits only refuses to evaluate any other."""
    if split != "test":
        raise UserError(f"the {split} split was asked for, but data.name {data_cfg.name} has only train and test "
                        f"splits; use the test split (data.eval_split=test, eval.py --split test)")
