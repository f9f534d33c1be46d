"""One typed config: dataclasses, read from YAML with `_base_` inheritance and dotted overrides.

    cfg = load_config("configs/cifar10_lt/ldam_drw_rsg_r100.yaml", ["optim.lr=0.05"])

Every key is checked when the config is loaded: an unknown key, a wrong type or a value outside a
field's choices raises `UserError` naming the key, the file it came from and what is allowed. The
meaning of each key is the help or the comment beside its default below; the valid names of a
registered key (data.name, loss.name ...) and the settings of each loss are those registered
(core/registry.py). docs/CONFIG.md lists them all, written by `python scripts/config_reference.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from core.errors import UserError
from core.registry import Bounds
from data.registry import DATASETS
from data.samplers import SAMPLERS
from data.transforms import TRANSFORM_PRESETS
from losses import LOSSES
from models import BACKBONES
from rsg import GENERATION_MODES, MV_TERMS, VARIANTS, frequent_classes_from_counts


def choice(default, choices, help=""):
    """A field whose value must be one of `choices`."""
    return field(default=default, metadata={"choices": tuple(choices), "help": help})


def within(default, bounds: str, help=""):
    """A number, or a list of numbers each, that must lie within `bounds` (core.registry.Bounds:
    '>= 0', '> 0', '[0, 1)' ...; null passes where the type allows it): checked when the config loads,
    and shown in docs/CONFIG.md."""
    metadata = {"bounds": Bounds.parse(bounds), "help": help}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


# The keys whose valid values are the names of a registry: the registry is their only list.
REGISTRIES = {"data.name": DATASETS, "data.sampler": SAMPLERS, "loss.name": LOSSES, "model.backbone": BACKBONES}


def registered(default, help=""):
    """A field whose value must be a name of its key's registry (REGISTRIES)."""
    return field(default=default, metadata={"registered": True, "help": help})


def registered_settings(key: str):
    """The field of a section that holds the settings declared by the builders of `key`'s registry
    (`settings=` where each registers, core.registry.Setting): each is a key of the section like its
    fields (loss.max_margin), in the field's place; all builders' settings are held, whichever `key`
    names, so that a stored config rebuilds as it was written."""
    return field(default_factory=lambda: setting_defaults(REGISTRIES[key]), metadata={"settings_of": key})


def setting_defaults(registry) -> dict[str, Any]:
    return {key: next(iter(declared.values())).default for key, declared in registry.declared_settings().items()}


class HoldsSettings:
    """A section with a `registered_settings` field reads its settings as attributes: cfg.loss.scale."""

    def __getattr__(self, key: str):        # only when `key` is not a field
        settings = self.__dict__.get("settings", {})
        if key in settings:
            return settings[key]
        raise AttributeError(f"{type(self).__name__} has no key {key!r}")

    def __setattr__(self, key: str, value) -> None:
        if key != "settings" and key in self.__dict__.get("settings", {}):
            self.settings[key] = value
        else:
            super().__setattr__(key, value)


@dataclass
class DataConfig:
    name: str = registered("cifar10", "which dataset")
    root: str = "datasets"          # folder holding the dataset files (split lists: their paths' root)
    download: bool = False          # CIFAR only: download into root when the files are missing
    # Split lists, relative to root or absolute; "" = the dataset's standard file in root
    # (ImageNet_LT_train.txt, Places_LT_val.txt, iNaturalist18_train.txt or train2018.json, ...)
    train_list: str = ""
    val_list: str = ""              # the validation list (model selection with data.eval_split val)
    test_list: str = ""             # iNaturalist: its validation file (val is the test set)
    # Split lists: None = the dataset's own (1000, 365, 8142; split_list: inferred); 0 = inferred
    # from the training list (largest label + 1). Labels outside [0, num_classes) are refused.
    num_classes: Optional[int] = within(None, ">= 0")
    eval_split: str = choice("test", ["test", "val"],
                             "the split evaluated every epoch, on which best.pt is chosen; val exists for "
                             "split lists only (the large-scale configs select on val, report test)")
    profile: str = choice("longtail", ["longtail", "step", "balanced", "none"],
                          "how the training set is made imbalanced; none = as it is (the split-list "
                          "datasets, which come long-tailed)")
    imbalance_ratio: float = within(100.0, ">= 1")  # rho = n_max / n_min
    max_per_class: int = within(0, ">= 0")  # n_max; 0 = the dataset's own (CIFAR-10 5000, CIFAR-100 500)
    subset: str = choice("first", ["first", "ldam_drw", "seeded"],
                         "which n_i images of each class (CIFAR, image folders): first = the first n_i in "
                         "file order (the RSG authors' code: the paper's RSG rows); ldam_drw = Cao et al.'s "
                         "per-class shuffle, index for index (the paper's ERM/Focal/CB/M-DRW/LDAM-DRW rows); "
                         "seeded = this project's seeded pick (data.subset_seed)")
    # seeded: its seed (required); ldam_drw: Cao et al.'s --rand_number (null = their 0); an integer
    # with subset first reads as seeded (configs from before data.subset)
    subset_seed: Optional[int] = within(None, ">= 0")
    image_size: int = within(32, ">= 1")  # training crop size (digits: images are resized to this)
    crop_padding: int = within(4, ">= 0")  # zero padding before the random crop
    hflip: bool = True              # random horizontal flip
    transform: str = choice("pad_crop_flip", TRANSFORM_PRESETS,
                            "training augmentation: pad_crop_flip = zero-pad crop_padding, random crop "
                            "image_size, flip (CIFAR); resized_crop = RandomResizedCrop(image_size), flip "
                            "(Places-LT); resized_crop_jitter = that plus ColorJitter(0.4, 0.4, 0.4, 0) "
                            "(ImageNet-LT, iNaturalist)")
    eval_resize: int = within(0, ">= 0")  # evaluation: shorter side resized to this, then centre crop image_size; 0 = as is
    decoder: str = choice("torchvision", ["torchvision", "pil"],
                          "how image files are decoded: torchvision = torchvision.io to a uint8 tensor, "
                          "tensor transforms (the faster, docs/BENCHMARKS.md); pil = PIL image, PIL "
                          "transforms. Same augmentation distribution; in-memory CIFAR/digits always PIL")
    # An image file that does not decode: false = stop, naming it; true = use the next image of its
    # class instead and report the files at the end of each epoch and evaluation.
    skip_corrupt: bool = False
    mean: list[float] = within([0.4914, 0.4822, 0.4465], "[0, 1]")  # per channel (RGB)
    std: list[float] = within([0.2023, 0.1994, 0.2010], "> 0")   # per channel: (x - mean) / std
    batch_size: int = within(128, ">= 1")  # global training batch (drop_last); torchrun: split evenly over ranks
    eval_batch_size: int = within(512, ">= 1")  # evaluation batch
    num_workers: int = within(4, ">= 0")  # DataLoader worker processes (data.loader standard)
    sampler: str = registered("shuffle", "training order")
    resample_start: int = within(160, ">= 0")  # DRS: first epoch index of class-balanced re-sampling
    resample_beta: float = within(0.9999, "[0, 1)")  # DRS: effective-number beta of the re-sampling class weights
    loader: str = choice("standard", ["standard", "device"],
                         "standard = torch DataLoader with workers; device = the whole split kept on the "
                         "GPU (or CPU) as uint8, crop/flip/normalize batched there (small images only: "
                         "CIFAR, digits, small image folders; pad_crop_flip augmentation)")


@dataclass
class ModelConfig:
    backbone: str = registered("resnet32", "the network before the classifier (models/backbones)")
    classifier: str = choice("auto", ["auto", "linear", "cosine"],
                             "auto = cosine (normalized) when the loss is LDAM, else linear")
    pretrained: str = "none"        # none | torchvision (ImageNet IMAGENET1K_V1) | /path/to/torchvision_state_dict.pth


@dataclass
class RSGConfig:
    """RSG's settings. A key named like an argument of rsg.RSG goes to it as it is (RSG.arguments_from:
    a new RSG option is one argument there and one key here); frequent_ratio gives its frequent
    classes; enabled and position say whether and where the model has it; cesc_weight and mv_weight
    are Eq. 7's lambda1 and lambda2 (rsg.loss_weights). tests/test_rsg_contract.py keeps it so."""
    enabled: bool = True            # false: the same network and recipe without RSG
    position: str = "default"       # stage whose input RSG transforms; default = the backbone's
    num_centers: int = within(15, ">= 1")  # K centers per class
    contrastive_channels: int = within(256, ">= 1")  # width of the contrastive module h (Eq. 2)
    # alpha: the top int(alpha * C) classes by count are frequent; at least one class must be
    # frequent and one rare, or RSG never generates
    frequent_ratio: float = within(0.2, "(0, 1)")
    transfer_strength: float = within(1.0, "> 0")  # beta in s_new = max(floor(beta * s_freq / s_rare), 1) * s_rare
    threshold_epoch: int = within(160, ">= 0")  # T_th: generation starts at this epoch index (0: from the first)
    cesc_weight: float = within(0.1, ">= 0")  # lambda1 in Eq. 7
    mv_weight: float = within(0.01, ">= 0")  # lambda2 in Eq. 7
    # Table 3 ablations. mv_terms: which terms of L_MV (Eq. 6) are kept, in rsg.MV_TERMS's order:
    # [direction (cosine to x_fd-rare), length (||T(x_fd-freq)|| = ||x_fd-freq||), contrast (not the same class)].
    mv_terms: list[bool] = field(default_factory=lambda: [True] * len(MV_TERMS))
    generation: str = choice("transform", list(GENERATION_MODES),
                             "transform = x_rare + T(x_fd-freq) (Eq. 4); rare_center = the rare sample's "
                             "closest center + T(x_fd-freq); direct = x_rare + x_fd-freq, no T and no L_MV")
    variant: str = choice("paper", list(VARIANTS),
                          "paper = the paper's equations; authors = the authors' code where it departs from "
                          "them (docs/CHOICES.md, \"The authors' code as a switch\")")


@dataclass
class LossConfig(HoldsSettings):
    name: str = registered("ldam", "the classification loss L_cls")
    # The keys each loss reads (loss.max_margin, loss.focal_gamma ...), declared where it registers
    # (losses/, settings=); every loss's, whichever is selected: docs/CONFIG.md lists them.
    settings: dict = registered_settings("loss.name")
    reweight: str = choice("drw", ["none", "drw", "cb"],
                           "class weights: none; drw = class-balanced from reweight_start (deferred "
                           "re-weighting); cb = class-balanced from epoch 0 (CB RW, CB Focal)")
    reweight_start: int = within(160, ">= 0")  # DRW: first epoch index with class-balanced weights
    reweight_beta: float = within(0.9999, "[0, 1)")  # effective-number beta of the class-balanced weights


@dataclass
class OptimConfig:
    lr: float = within(0.1, "> 0")  # SGD learning rate after the warm-up
    momentum: float = within(0.9, "[0, 1)")  # SGD momentum
    weight_decay: float = within(2e-4, ">= 0")  # applied to every parameter, RSG's included
    nesterov: bool = False          # Nesterov momentum
    warmup_epochs: int = within(5, ">= 0")  # linear warm-up: lr * (epoch + 1) / warmup_epochs
    milestones: list[int] = within([160, 180], ">= 0")  # epoch indices of the lr steps
    decay: float = within(0.01, "> 0")  # lr multiplied by this at each milestone (when milestone_decays is empty)
    milestone_decays: list[float] = within([], "> 0")  # one factor per milestone, e.g. [0.1, 0.5]
    schedule: str = choice("step", ["step", "cosine"],
                           "after the warm-up: step = the milestones' factors; cosine = lr * (1 + cos(pi * t)) "
                           "/ 2, t the fraction of the post-warm-up epochs done, per epoch (Kang et al.'s "
                           "classifier stage); milestones are then ignored")


@dataclass
class TrainConfig:
    epochs: int = within(200, ">= 1")  # number of epochs, indices 0 .. epochs - 1
    seed: int = within(0, ">= 0")   # every random stream derives from it and the epoch (core/seeds.py)
    deterministic: bool = False     # deterministic kernels (bit-exact resume on the CPU)
    device: str = "auto"            # auto = cuda when available, else cpu
    eval_every: int = within(1, ">= 1")  # evaluate every N epochs (and always at the last)
    # From this epoch index on, evaluate every epoch whatever eval_every says; null = never. A long
    # run on a slow machine: eval_every 10 while the lr is high, every epoch from the first decay (T_th).
    eval_every_epoch_from: Optional[int] = within(None, ">= 0")
    log_every: int = within(20, ">= 1")  # steps between TensorBoard step scalars
    progress: bool = True           # tqdm bar per epoch
    amp: str = choice("none", ["none", "bf16", "fp16"],
                      "mixed precision: autocast to bf16, or fp16 with a gradient scaler")
    channels_last: bool = False     # NHWC memory format for the model and its inputs
    compile: bool = False           # torch.compile each backbone stage and the head (RSG stays eager)
    sync_bn: bool = False           # torchrun: SyncBatchNorm, batch statistics over all ranks


@dataclass
class EvalConfig:
    posthoc: str = choice("none", ["none", "logit_adjust", "tau_norm"],
                          "evaluation-time correction over the tau grid eval.taus: logit_adjust = logits - "
                          "tau * log(prior) (Menon et al. 2021); tau_norm = w_c / ||w_c||^tau, no bias (Kang "
                          "et al. 2020; linear classifier only). tau is chosen on the val split where the "
                          "dataset has one, else eval.tau is reported; every tau is logged")
    taus: list[float] = within([round(0.1 * i, 1) for i in range(21)], ">= 0")  # 0, 0.1 .. 2
    tau: float = within(1.0, ">= 0")  # the reported tau on datasets without a val split (it must be in taus)


@dataclass
class StageConfig:
    name: str = choice("none", ["none", "crt", "lws", "tau_norm"],
                       "second, classifier-only stage from stage.parent (Kang et al. 2020): crt = backbone "
                       "frozen, classifier re-initialised and retrained; lws = backbone and classifier "
                       "frozen, one learned scale per class; tau_norm = no training, the classifier "
                       "normalised at evaluation (eval.taus). RSG must be off (rsg.enabled=false)")
    parent: str = ""                # the first stage's checkpoint (its last.pt); required with a stage
    parent_sha256: str = ""         # written by train.py (the parent's sha256); set: checked on resume
    parent_epoch: Optional[int] = within(None, ">= 0")  # written by train.py: the epochs the parent had trained


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rsg: RSGConfig = field(default_factory=RSGConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    name: str = ""                  # run name; default: the config file's name
    output_dir: str = ""            # default: runs/<name> if name is set, else runs/<config path under configs/, no .yaml>

    @property
    def head_kind(self) -> str:
        """model.classifier, with auto resolved by the loss's registration: cosine (normalized) for the
        losses that put their margin on cosine logits (LDAM, AM-softmax), linear otherwise."""
        if self.model.classifier != "auto":
            return self.model.classifier
        return LOSSES.info(self.loss.name).get("head", "linear")


# Where and how a run runs, not what it trains (the same results up to floating-point differences):
# a branch may change them (engine/branch.py), and the collector ignores them when it matches a run
# to its config (tools/collect_results.py).
RUN_KEYS = frozenset({"name", "output_dir", "data.root", "data.download", "data.num_workers", "data.eval_batch_size",
                      "data.decoder", "data.loader", "train.device", "train.progress", "train.log_every",
                      "train.eval_every", "train.eval_every_epoch_from", "train.amp", "train.channels_last",
                      "train.compile", "train.sync_bn", "train.deterministic"})


# ---------------------------------------------------------------------------------------------
# Reading YAML


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a key given twice in one mapping: PyYAML keeps the last value
    silently, so a setting could be lost without a word. Keys of merged mappings (<<) may still be
    overridden: the check runs before PyYAML merges them in."""

    def construct_mapping(self, node, deep=False):
        first_lines = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = (key_node.tag, key_node.value)      # the tag tells the integer 1 from the text "1"
            if key in first_lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key_node.value!r} is given twice in one mapping (first on line "
                    f"{first_lines[key] + 1}); keep one", key_node.start_mark)
            first_lines[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _read_yaml(path: str, included_by: Optional[str] = None) -> dict:
    if not os.path.exists(path):
        where = f" (the _base_ of {included_by}; _base_ paths are relative to that file)" if included_by else ""
        raise UserError(f"config file not found: {path}{where}")
    if os.path.isdir(path):
        raise UserError(f"config file {path} is a directory; give a YAML file")
    try:
        with open(path, encoding="utf-8") as f:
            content = yaml.load(f, Loader=UniqueKeyLoader)
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text (byte {error.start} is {error.object[error.start]:#04x}); "
                        f"a config is a YAML text file: save it as UTF-8") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML: {yaml_problem(error)}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise UserError(f"{path}: the top level must be a mapping of keys, not {type(content).__name__}")
    return content


def yaml_problem(error: yaml.YAMLError) -> str:
    """'line 7, column 3: mapping values are not allowed here' (lines counted from 1)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'optim': {'lr': 0.1}} -> {'optim.lr': 0.1}; lists stay values."""
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _load_with_bases(path: str, seen: tuple = ()) -> tuple[dict[str, Any], dict[str, str]]:
    """Flat values and, for each dotted key, the file that set it (later files win)."""
    path = os.path.normpath(path)
    if path in seen:
        raise UserError(f"{path}: _base_ cycle through {' -> '.join(seen + (path,))}")
    content = _read_yaml(path, included_by=seen[-1] if seen else None)
    bases = content.pop("_base_", None) or []
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise UserError(f"{path}: _base_ must be a file name or a list of file names, got {bases!r}")
    values, sources = {}, {}
    for base in bases:
        base_path = os.path.join(os.path.dirname(path), base)
        base_values, base_sources = _load_with_bases(base_path, seen + (path,))
        values.update(base_values)
        sources.update(base_sources)
    for key, value in flatten(content).items():
        values[key] = value
        sources[key] = path
    return values, sources


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise UserError(f"command line: override '{text}' must look like key=value, e.g. optim.lr=0.05")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


# ---------------------------------------------------------------------------------------------
# Typed conversion


def _field_map(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _convert(value: Any, tp, where: str) -> Any:
    """Check `value` against the annotation `tp` (int, float, bool, str, list[...], Optional)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], where)
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} must be a list of {_type_name(item_type)}, got {value!r}")
        return [_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):  # YAML 1.1 reads 1e-3 as text
            number = float(value)
        if number is not None and not math.isfinite(number):    # .nan, .inf: no setting means them
            raise UserError(f"{where} must be a finite number, got {value!r}")
        if number is not None:
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    raise UserError(f"{where} must be {_type_name(tp)}, got {value!r}")


def check_bounds(value, bounds: Optional[Bounds], where: str) -> None:
    """A number (each number of a list) within the field's declared bounds; null passes."""
    if bounds is None or value is None:
        return
    for item in value if isinstance(value, list) else [value]:
        if not bounds.contains(item):
            what = "hold numbers" if isinstance(value, list) else "be"
            raise UserError(f"{where} must {what} {bounds}, got {value!r}")


def _settings_field(cls) -> Optional[dataclasses.Field]:
    """The `registered_settings` field of a section, if it has one."""
    return next((f for f in dataclasses.fields(cls) if f.metadata.get("settings_of")), None)


def declared_settings(cls) -> dict:
    """{key: {builder name: Setting}} of the settings a section holds; {} for most sections."""
    holder = _settings_field(cls)
    if holder is None:
        return {}
    declared = REGISTRIES[holder.metadata["settings_of"]].declared_settings()
    clash = sorted(set(declared) & set(_field_map(cls)))
    if clash:   # a builder's mistake, raised where the config is read
        raise ValueError(f"settings {clash} have the names of keys of {cls.__name__}; rename them")
    return declared


def section_keys(cls) -> list[str]:
    """A section's keys in order: its fields, the settings field replaced by the settings it holds."""
    keys = []
    for f in dataclasses.fields(cls):
        keys += list(declared_settings(cls)) if f.metadata.get("settings_of") else [f.name]
    return keys


def _convert_setting(value: Any, declarations: dict, where: str) -> Any:
    """`value` of a declared setting, converted to its type and checked by every loss that reads it."""
    converted = _convert(value, next(iter(declarations.values())).value_type, where)
    for setting in declarations.values():
        if setting.problem(converted):
            raise UserError(f"{where} {setting.problem(converted)}")
    return converted


def _build(cls, values: dict[str, Any], sources: dict[str, str], prefix: str = ""):
    fields = _field_map(cls)
    hints = typing.get_type_hints(cls)
    declared = declared_settings(cls)
    kwargs, children, settings = {}, {}, {}
    for dotted, value in values.items():
        head, _, rest = dotted.partition(".")
        where = f"{sources.get(prefix + dotted, 'command line')}: key '{prefix}{dotted}'"
        if head in declared and not rest:
            settings[head] = _convert_setting(value, declared[head], where)
            continue
        if head not in declared and (head not in fields or fields[head].metadata.get("settings_of")):
            valid = ", ".join(section_keys(cls))
            scope = f"'{prefix[:-1]}'" if prefix else "the top level"
            raise UserError(f"{where} is unknown; valid keys in {scope}: {valid}")
        nested = head in fields and dataclasses.is_dataclass(hints[head])
        if nested and not rest:
            raise UserError(f"{where} is a section; set its keys ({', '.join(section_keys(hints[head]))})")
        if rest and not nested:
            raise UserError(f"{where}: '{prefix}{head}' is a value, not a section")
        if nested:
            children.setdefault(head, {})[rest] = value
            continue
        converted = _convert(value, hints[head], where)
        valid_choices = fields[head].metadata.get("choices")
        if valid_choices and converted not in valid_choices:
            raise UserError(f"{where} is {converted!r}; valid choices: {', '.join(valid_choices)}")
        check_bounds(converted, fields[head].metadata.get("bounds"), where)
        if fields[head].metadata.get("registered"):
            REGISTRIES[prefix + head].check(converted, where)
        kwargs[head] = converted
    for head, child_values in children.items():
        kwargs[head] = _build(hints[head], child_values, sources, f"{prefix}{head}.")
    if declared:
        kwargs[_settings_field(cls).name] = {key: settings.get(key, next(iter(declarations.values())).default)
                                             for key, declarations in declared.items()}
    return cls(**kwargs)


def load_config(path: str, overrides: Optional[list[str]] = None) -> Config:
    values, sources = _load_with_bases(path)
    for text in overrides or []:
        key, value = _parse_override(text)
        values[key] = value
        sources[key] = "command line"
    cfg = _build(Config, values, sources)
    if not cfg.output_dir:  # an explicit name gives runs/<name>; else the config's path does
        cfg.output_dir = os.path.join("runs", cfg.name) if cfg.name else default_output_dir(path)
    if not cfg.name:
        cfg.name = os.path.splitext(os.path.basename(path))[0]
    validate(cfg)
    return cfg


def default_output_dir(config_path: str) -> str:
    """runs/<the config's path under configs/, without .yaml>, e.g. runs/cifar10_lt/ldam_drw_rsg_r100,
    so that same-named configs of different datasets never share a run directory; a config outside
    a configs/ folder: runs/<file name>."""
    parts = os.path.normpath(os.path.abspath(config_path)).split(os.sep)
    if "configs" in parts:
        below = parts[len(parts) - 1 - parts[::-1].index("configs") + 1:]
    else:
        below = parts[-1:]
    return os.path.join("runs", *below[:-1], os.path.splitext(below[-1])[0])


def config_from_dict(tree: dict, overrides: Optional[list[str]] = None, source: str = "checkpoint") -> Config:
    """Rebuild a config stored as a dict (in a checkpoint or a run's config.yaml)."""
    values = flatten(tree)
    sources = {key: source for key in values}
    for text in overrides or []:
        key, value = _parse_override(text)
        values[key] = value
        sources[key] = "command line"
    cfg = _build(Config, values, sources)
    validate(cfg)
    return cfg


def _validate_data_source(data: DataConfig, need) -> None:
    """The split-list keys against data.name, and the evaluation crop."""
    facts = DATASETS.info(data.name)
    lists = facts.get("split_lists", False)
    for key in ("train_list", "val_list", "test_list"):
        need(lists or not getattr(data, key), f"data.{key}",
             f"is for split-list datasets ({', '.join(DATASETS.names(split_lists=True))}); data.name is {data.name}")
    need(lists or data.num_classes is None, "data.num_classes",
         f"is for split-list datasets; {data.name} has its own classes")
    need(lists or data.eval_split == "test", "data.eval_split",
         f"is {data.eval_split!r}, but {data.name} has no validation split; valid: test")
    need(not facts.get("long_tailed") or data.profile == "none", "data.profile",
         f"is {data.profile!r}, but {data.name} is long-tailed already; set data.profile: none")
    if data.name == "split_list":
        need(data.train_list, "data.train_list", "must name the training list file when data.name is split_list")
        need(getattr(data, f"{data.eval_split}_list"), f"data.{data.eval_split}_list",
             f"must name a list file: data.eval_split is {data.eval_split}")
    need(data.eval_resize == 0 or data.eval_resize >= data.image_size, "data.eval_resize",
         f"is {data.eval_resize}; it must be 0 (no resize) or >= data.image_size ({data.image_size}), the centre crop")


def validate(cfg: Config) -> None:
    """Checks that involve more than one key, or ranges."""
    def need(condition, key, message):
        if not condition:
            raise UserError(f"key '{key}' {message}")

    need(cfg.data.subset != "seeded" or cfg.data.subset_seed is not None, "data.subset_seed",
         "is needed by data.subset=seeded (an integer, e.g. data.subset_seed=0)")
    need(len(cfg.data.mean) == 3 and len(cfg.data.std) == 3, "data.mean/data.std", "need 3 values each")
    _validate_data_source(cfg.data, need)
    _validate_rsg_classes(cfg, need)
    stages = BACKBONES.info(cfg.model.backbone)["stages"]
    need(cfg.rsg.position in ("default",) + stages, "rsg.position",
         f"is {cfg.rsg.position!r}, not a stage of {cfg.model.backbone}; valid choices: default, {', '.join(stages)}")
    need(cfg.model.pretrained in ("none", "torchvision") or cfg.model.pretrained.endswith((".pth", ".pt")),
         "model.pretrained", f"is {cfg.model.pretrained!r}; valid: none, torchvision, or a path to a .pth file")
    need(cfg.optim.milestones == sorted(cfg.optim.milestones), "optim.milestones", "must be increasing")
    need(not cfg.optim.milestone_decays or len(cfg.optim.milestone_decays) == len(cfg.optim.milestones),
         "optim.milestone_decays", f"needs one factor per milestone ({len(cfg.optim.milestones)}), "
         f"got {len(cfg.optim.milestone_decays)}; leave it empty to use optim.decay at each")
    need(len(cfg.rsg.mv_terms) == len(MV_TERMS), "rsg.mv_terms",
         f"needs {len(MV_TERMS)} values, one per term of L_MV (Eq. 6: {', '.join(MV_TERMS)})")
    need(cfg.data.loader == "standard" or cfg.data.transform == "pad_crop_flip", "data.loader",
         "device supports the pad_crop_flip augmentation only; use data.loader=standard")
    _validate_beyond(cfg, need)
    need(cfg.train.device in ("auto", "cpu") or cfg.train.device.startswith("cuda"), "train.device",
         "must be auto, cpu or cuda[:N]")


def _validate_rsg_classes(cfg: Config, need) -> None:
    """alpha that leaves RSG no frequent class, or no rare one, where the dataset's class count is
    known before its files are read: RSG could never generate."""
    classes = cfg.data.num_classes or DATASETS.info(cfg.data.name).get("num_classes")
    if not cfg.rsg.enabled or not classes:
        return
    frequent = len(frequent_classes_from_counts([1] * classes, cfg.rsg.frequent_ratio))   # RSG's own rule
    need(0 < frequent < classes, "rsg.frequent_ratio",
         f"is {cfg.rsg.frequent_ratio}: with {classes} classes it makes {frequent} frequent (int(alpha * C)), "
         f"so RSG could never generate; it needs at least one frequent class (alpha >= 1 / C = "
         f"{1 / classes:.4g} here), or set rsg.enabled=false")


def _validate_beyond(cfg: Config, need) -> None:
    """The classifier stage and the evaluation-time tau grid (docs/CHOICES.md, "Today's baselines and the
    decoupled classifier stage")."""
    stage = cfg.stage.name
    need(cfg.eval.posthoc == "none" or cfg.eval.taus, "eval.taus", "must list at least one tau")
    need(cfg.eval.posthoc == "none" or cfg.eval.tau in cfg.eval.taus, "eval.tau",
         f"is {cfg.eval.tau}, which is not in eval.taus {cfg.eval.taus}; it is the tau reported without a val split")
    if stage == "none":
        need(not cfg.stage.parent, "stage.parent", "names a parent checkpoint, but stage.name is none; "
             "set stage.name to crt, lws or tau_norm")
        return
    need(cfg.stage.parent, "stage.parent", f"must name the first stage's checkpoint (stage.name is {stage}), "
         f"e.g. stage.parent=runs/<first stage>/last.pt")
    need(not cfg.rsg.enabled, "rsg.enabled", f"must be false in the classifier stage {stage}: RSG is a "
         f"feature-learning module and the backbone is frozen here (the parent may have used it)")
    need(stage != "tau_norm" or cfg.train.epochs == 1, "train.epochs",
         "must be 1 with stage.name=tau_norm: it trains nothing, it evaluates the parent once")
    need(stage != "tau_norm" or cfg.eval.posthoc in ("none", "tau_norm"), "eval.posthoc",
         f"is {cfg.eval.posthoc!r}, but stage.name=tau_norm evaluates the tau-normalised classifier; "
         f"set eval.posthoc=tau_norm (or none)")


def config_differences(old: dict, new: dict, ignore=frozenset()) -> dict:
    """{dotted key: (old value, new value)} of the keys outside `ignore` whose values differ between
    two config dicts (a key missing on one side has the value None there)."""
    old, new = flatten(old), flatten(new)
    return {key: (old.get(key), new.get(key)) for key in sorted(set(old) | set(new))
            if key not in ignore and old.get(key) != new.get(key)}


def config_to_dict(cfg) -> dict:
    """The config as nested dicts of plain values, a section's settings in its settings field's place."""
    tree = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get("settings_of"):
            tree.update(copy.deepcopy(value))
        elif dataclasses.is_dataclass(value):
            tree[f.name] = config_to_dict(value)
        else:
            tree[f.name] = copy.deepcopy(value)
    return tree


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


def save_config(cfg: Config, path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(dump_config(cfg))
    os.replace(tmp, path)
