"""The decoupled classifier stage (Kang et al., ICLR 2020) from a first-stage checkpoint.

    stage.name: crt        backbone frozen, classifier re-initialised, retrained (class-balanced sampler)
    stage.name: lws        backbone and classifier frozen, one learned scale per class (models.heads.ScaledHead)
    stage.name: tau_norm   nothing trains; the classifier is normalised at evaluation (engine/posthoc.py)
    stage.parent: runs/<first stage>/last.pt

RSG is off in this stage (the config refuses rsg.enabled=true): it shapes the features, which are
frozen here. The run records its first stage (path, sha256, epoch) in config.yaml and its checkpoints
(under the keys stage.parent* and "parent", as before). `ClassifierStage` says what each stage trains.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

from core import LOGGER_NAME
from core.errors import UserError
from data.imbalance import resolve_subset
from data.registry import DATASETS
from engine.checkpoint import file_sha256, load_checkpoint, load_model_weights, stored_config
from engine.run_folder import same_folder
from models import strip_rsg

log = logging.getLogger(LOGGER_NAME)


@dataclass(frozen=True)
class ClassifierStage:
    """What a classifier stage takes from its first stage and what it trains (Kang et al. 2020,
    section 4): the backbone always comes from the first stage and stays frozen."""
    name: str
    keeps_classifier: bool   # the first stage's classifier is loaded (else re-initialised from the seed)
    trains: str              # "classifier" (cRT), "scales" (LWS: one per class), "nothing" (tau-norm)

    @property
    def trains_anything(self) -> bool:
        return self.trains != "nothing"

    def trained_parameters(self, model) -> list:
        """The parameters this stage optimises, in the model's order; every other one is frozen."""
        if self.trains == "classifier":
            return list(model.head.parameters())
        if self.trains == "scales":
            return [model.head.scales]        # models.heads.ScaledHead around the first stage's classifier
        return []


CLASSIFIER_STAGES = {stage.name: stage for stage in (
    ClassifierStage("crt", keeps_classifier=False, trains="classifier"),
    ClassifierStage("lws", keeps_classifier=True, trains="scales"),
    ClassifierStage("tau_norm", keeps_classifier=True, trains="nothing"),
)}


def classifier_stage(cfg) -> Optional[ClassifierStage]:
    """The configured classifier stage; None for a first stage (stage.name: none)."""
    return CLASSIFIER_STAGES.get(cfg.stage.name)


def load_first_stage(cfg) -> dict:
    """Load the parent checkpoint, fill stage.parent_sha256 / parent_epoch into `cfg` (so that
    config.yaml records them) and return its state. A config that already names a sha256 (a
    resumed run) must name the same file contents: a replaced parent would mix two first stages."""
    path = cfg.stage.parent
    if same_folder(os.path.dirname(os.path.abspath(path)), cfg.output_dir):
        raise UserError(f"key 'output_dir': {cfg.output_dir} is the folder of the stage's parent {path}; the "
                        "classifier stage needs a folder of its own (its --overwrite would delete the parent)")
    state = load_checkpoint(path)
    check_same_training_data(cfg, stored_config(state, path))   # before this stage reads any data
    sha256 = file_sha256(path)
    if cfg.stage.parent_sha256 and cfg.stage.parent_sha256 != sha256:
        raise UserError(f"key 'stage.parent': {path} has sha256 {sha256[:12]}..., but this run was started from "
                        f"a parent with sha256 {cfg.stage.parent_sha256[:12]}...; restore that file, or start a "
                        f"new run (another output_dir) from the new parent")
    cfg.stage.parent_sha256 = sha256
    cfg.stage.parent_epoch = int(state["epoch"])
    return state


def first_stage_record(cfg) -> dict:
    """What a checkpoint stores about the parent."""
    return {"path": cfg.stage.parent, "sha256": cfg.stage.parent_sha256, "epoch": cfg.stage.parent_epoch,
            "stage": cfg.stage.name}


def training_data(data_cfg) -> dict:
    """{key: value} of what decides a run's training images and labels: two data sections with the
    same training_data train on the same set. The root by its real path (moved or linked data is
    the same data); the subset and the imbalance only where data.profile makes one."""
    subset, subset_seed = resolve_subset(data_cfg.subset, data_cfg.subset_seed)
    identity = {"data.name": data_cfg.name, "data.train_list": data_cfg.train_list,
                "data.num_classes": data_cfg.num_classes, "data.profile": data_cfg.profile}
    if DATASETS.info(data_cfg.name).get("reads_root", True):     # the embedded digits read none
        identity["data.root"] = os.path.realpath(data_cfg.root)
    if data_cfg.profile != "none":
        identity.update({"data.imbalance_ratio": data_cfg.imbalance_ratio, "data.max_per_class": data_cfg.max_per_class,
                         "data.subset": subset if subset_seed is None else f"{subset} (seed {subset_seed})"})
    return identity


def check_same_training_data(cfg, parent_cfg) -> None:
    """A classifier stage retrains on its parent's training set: other images with the same class
    counts (another subset, dataset or root) would pair features with data they never saw."""
    parents, ours = training_data(parent_cfg.data), training_data(cfg.data)
    # A key only one side's dataset reads differs through data.name, which names it already.
    differing = [f"{key} (parent {parents[key]!r}, here {ours[key]!r})"
                 for key in parents if key in ours and parents[key] != ours[key]]
    if differing:
        raise UserError(f"key 'stage.parent': {cfg.stage.parent} was trained on other data than this stage: "
                        f"{'; '.join(differing)}; set those keys as the parent had them (its config.yaml)")


def check_compatible(cfg, first_stage: dict, counts) -> None:
    parent_cfg = first_stage["config"]
    path = cfg.stage.parent
    if list(first_stage["class_counts"]) != list(counts):
        raise UserError(f"key 'stage.parent': {path} was trained on other class counts than this stage's training "
                        f"set ({len(first_stage['class_counts'])} vs {len(counts)} classes, or another subset); "
                        f"the classifier stage must use the first stage's data settings")
    if parent_cfg["model"]["backbone"] != cfg.model.backbone:
        raise UserError(f"key 'model.backbone' is {cfg.model.backbone}, but the parent {path} is a "
                        f"{parent_cfg['model']['backbone']}; set model.backbone={parent_cfg['model']['backbone']}")
    if classifier_stage(cfg).keeps_classifier:
        parent_kind = stored_config(first_stage, path).head_kind
        if parent_kind != cfg.head_kind:
            raise UserError(f"stage.name={cfg.stage.name} keeps the parent's classifier, a {parent_kind} one, but this "
                            f"config builds a {cfg.head_kind} one; set model.classifier={parent_kind} (and the "
                            f"parent's loss.name)")
    if cfg.stage.name == "tau_norm" and cfg.head_kind == "cosine":
        raise UserError(f"stage.name=tau_norm on the cosine classifier of {path}: its class weights are normalised "
                        f"already (every ||w_c|| = 1), so tau-normalisation changes nothing; use stage.name=crt or "
                        f"lws, or a first stage with a linear classifier")


def load_first_stage_into(model, cfg, first_stage: dict) -> None:
    """The first stage's backbone always; its classifier too where the stage keeps it (cRT
    re-initialises it: the head built from the seed). Then freeze what this stage does not train."""
    stage, path = classifier_stage(cfg), cfg.stage.parent
    weights = strip_rsg(first_stage["model"])
    backbone = {k.removeprefix("backbone."): v for k, v in weights.items() if k.startswith("backbone.")}
    load_model_weights(model.backbone, backbone, path, f"backbone {cfg.model.backbone}")
    if stage.keeps_classifier:
        head = {k.removeprefix("head."): v for k, v in weights.items() if k.startswith("head.")}
        target = model.head.head if stage.trains == "scales" else model.head
        load_model_weights(target, head, path, f"{cfg.head_kind} classifier")
    model.freeze_backbone()
    trained = {id(parameter) for parameter in stage.trained_parameters(model)}
    for parameter in model.head.parameters():
        parameter.requires_grad_(id(parameter) in trained)


def check_same_first_stage(cfg, checkpoint: dict, path: str) -> None:
    """Resuming a classifier stage: the parent must be the file it started from."""
    stored = (checkpoint.get("parent") or {}).get("sha256")
    if stored and stored != cfg.stage.parent_sha256:
        raise UserError(f"cannot resume {path}: it was trained from a parent with sha256 {stored[:12]}..., but "
                        f"stage.parent={cfg.stage.parent} now has sha256 {cfg.stage.parent_sha256[:12]}...; restore "
                        f"that parent, or start a new run (another output_dir)")


def prepare_stage(model, cfg, counts, first_stage: dict) -> None:
    """Give `model` (built from the stage's config, without RSG) the weights of its first stage (read
    by `load_first_stage`) and freeze what the stage does not train."""
    check_compatible(cfg, first_stage, counts)
    load_first_stage_into(model, cfg, first_stage)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("classifier stage %s from %s (epoch %s, sha256 %s...): %d trainable parameters%s", cfg.stage.name,
             os.path.abspath(cfg.stage.parent), cfg.stage.parent_epoch, cfg.stage.parent_sha256[:12], trainable,
             "" if classifier_stage(cfg).keeps_classifier else ", classifier re-initialised")
