"""DATASETS: data.name -> loader(data_cfg, eval_split, train_transform, eval_transform, with_train=True),
which returns (the whole training split, the evaluation split); with_train=False returns (None, the
evaluation split) and reads of the training split only what the evaluation split needs (eval.py).
Each loader is registered beside its code: data/builder.py (CIFAR, digits, image folders),
data/split_lists.py (ImageNet-LT, Places-LT, iNaturalist 2018, split_list).

Facts a registration states, read by the config and the builder without loading anything:
  split_lists   reads 'path label' list files (data.train_list ...; has a val split)
  long_tailed   comes imbalanced: data.profile must be none
  in_memory     held as uint8 arrays (PIL transforms; data.decoder concerns files only)
  max_per_class n_max of its long-tailed version when data.max_per_class is 0 (default: the
                most populated class)
"""

from core.registry import Registry

DATASETS = Registry("dataset", "data.name")
