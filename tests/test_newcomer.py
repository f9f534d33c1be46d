"""A newcomer adds a loss with one setting, and a dataset, each by writing two files: the module
that registers it (beside nothing else: the package imports every module it holds) and a YAML
(docs/DESIGN.md, "Adding things", tasks (a) and (b)). Here each module is written to a
folder put on its package's path, as if saved in losses/ or data/, and imported the way the
package imports its own (core.registry.import_modules)."""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap

import pytest

import data
import losses
from conftest import read_jsonl, tiny_config_dict, write_config
from core.errors import UserError
from core.registry import import_modules
from data.builder import build_datasets
from data.imbalance import class_counts
from data.registry import DATASETS, LabelledDataset
from engine.config import load_config
from engine.run import fit
from losses import LOSSES, build_loss

# File 1 of (a): losses/smoothed_ce.py.
SMOOTHED_CE_MODULE = '''
    import torch.nn.functional as F
    from torch import nn

    from core.registry import Setting
    from losses.registry import LOSSES


    class SmoothedCrossEntropy(nn.Module):
        def __init__(self, smoothing):
            super().__init__()
            self.smoothing = smoothing

        def forward(self, logits, targets, class_weights=None):
            return F.cross_entropy(logits, targets, weight=class_weights, label_smoothing=self.smoothing)


    @LOSSES.register("smoothed_ce", help="cross-entropy with label smoothing",
                     settings={"smoothing": Setting(0.0, "the mass spread over the other classes",
                                                    lambda s: 0 <= s < 1, "must be in [0, 1)")})
    def build_smoothed_ce(cfg, class_counts):
        return SmoothedCrossEntropy(cfg.loss.smoothing)
'''

# File 1 of (b): data/stripes.py, three classes of 16 x 16 stripes whose period says the class.
STRIPES_MODULE = '''
    import numpy as np

    from data.datasets import ArrayDataset
    from data.registry import DATASETS, only_test_split

    CLASSES = ["period2", "period4", "period8"]


    def stripes(per_class):
        columns = np.arange(16)
        rows = [(columns // (2 ** (c + 1)) % 2) * 255 for c in range(len(CLASSES))]
        images = np.stack([np.broadcast_to(rows[c][None, :, None], (16, 16, 3))
                           for c in range(len(CLASSES)) for _ in range(per_class)]).astype(np.uint8)
        return images, [c for c in range(len(CLASSES)) for _ in range(per_class)]


    @DATASETS.register("stripes", in_memory=True, max_per_class=20, help="stripes of three periods")
    def load_stripes(data_cfg, split, train_tf, test_tf, with_train=True):
        only_test_split(data_cfg, split)
        test = ArrayDataset(*stripes(4), test_tf, CLASSES)
        if not with_train:
            return None, test
        return ArrayDataset(*stripes(20), train_tf, CLASSES), test
'''


@contextlib.contextmanager
def added_module(package, name: str, text: str, folder):
    """`text` saved as `package`/`name`.py and the package's modules imported, as when Python
    imports the package; afterwards the registry, the package and sys.modules are as they were."""
    registry = {losses: LOSSES, data: DATASETS}[package]
    module_name = f"{package.__name__}.{name}"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(registry, "_builders", dict(registry._builders))
        monkeypatch.setattr(registry, "_info", dict(registry._info))
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.py").write_text(textwrap.dedent(text))
        monkeypatch.setattr(package, "__path__", list(package.__path__) + [str(folder)])
        try:
            import_modules(package.__name__, package.__path__)
            yield
        finally:
            sys.modules.pop(module_name, None)
            if hasattr(package, name):
                delattr(package, name)


@pytest.fixture
def smoothed_ce(tmp_path):
    with added_module(losses, "smoothed_ce", SMOOTHED_CE_MODULE, tmp_path / "losses"):
        yield


@pytest.fixture
def stripes(tmp_path):
    with added_module(data, "stripes", STRIPES_MODULE, tmp_path / "data"):
        yield


def smoothed_ce_yaml(tmp_path, **loss) -> str:
    """File 2 of (a): a config that selects the loss and sets its setting."""
    tree = tiny_config_dict(str(tmp_path / "run"), loss={"name": "smoothed_ce", "smoothing": 0.2, **loss})
    return write_config(tmp_path / "smoothed_ce.yaml", tree)


def stripes_yaml(tmp_path) -> str:
    """File 2 of (b): a config that selects the dataset."""
    tree = tiny_config_dict(str(tmp_path / "run"), data={"name": "stripes", "max_per_class": 0, "imbalance_ratio": 4})
    return write_config(tmp_path / "stripes.yaml", tree)


def test_a_new_loss_module_reads_its_setting_from_the_yaml(tmp_path, smoothed_ce):
    cfg = load_config(smoothed_ce_yaml(tmp_path))
    assert cfg.loss.smoothing == 0.2 and build_loss(cfg, [40, 10, 4]).smoothing == 0.2
    assert load_config(smoothed_ce_yaml(tmp_path), ["loss.smoothing=0.1"]).loss.smoothing == 0.1


def test_a_new_loss_refuses_a_misspelled_or_invalid_setting(tmp_path, smoothed_ce):
    with pytest.raises(UserError, match=r"key 'loss.smoothin' is unknown; valid keys in 'loss': name, .*smoothing"):
        load_config(smoothed_ce_yaml(tmp_path, smoothin=0.1))
    with pytest.raises(UserError, match=r"key 'loss.smoothing' must be in \[0, 1\)"):
        load_config(smoothed_ce_yaml(tmp_path), ["loss.smoothing=1.5"])


def test_the_new_names_are_gone_after_their_tests():
    assert "smoothed_ce" not in LOSSES.names() and "stripes" not in DATASETS.names()
    assert "losses.smoothed_ce" not in sys.modules and "data.stripes" not in sys.modules
    assert "smoothing" not in LOSSES.declared_settings()


def test_a_new_dataset_module_is_built_by_the_data_builder(tmp_path, stripes):
    cfg = load_config(stripes_yaml(tmp_path))
    train, evaluation = build_datasets(cfg.data)
    assert isinstance(train, LabelledDataset) and isinstance(evaluation, LabelledDataset)
    assert class_counts(train.targets, train.num_classes) == [20, 10, 5]     # n_max 20, rho 4
    assert len(evaluation) == 12 and train[0][0].shape == (3, 16, 16)


@pytest.mark.slow
def test_a_new_loss_and_a_new_dataset_train(tmp_path, smoothed_ce, stripes):
    cfg = load_config(stripes_yaml(tmp_path), ["loss.name=smoothed_ce", "loss.smoothing=0.1",
                                                 "rsg.frequent_ratio=0.4"])   # one frequent class of three
    report = fit(cfg)
    assert 0 <= report.top1 <= 100
    assert [r["epoch"] for r in read_jsonl(os.path.join(cfg.output_dir, "metrics.jsonl"))] == [0, 1]
