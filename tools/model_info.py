"""Parameters and evaluation cost of the configured model, with and without RSG.

    python scripts/model_info.py --config configs/cifar10_lt/ldam_drw_rsg_r50.yaml [--num-classes N] [key=value ...]

Prints the parameters of the training model (backbone, RSG, head), of the evaluation model (RSG
removed: the plain backbone and head, as eval.py builds it) and the evaluation cost per image at
data.image_size. The cost is counted by torch.utils.flop_counter.FlopCounterMode on one image: the
multiply-accumulates (MACs) of convolutions and matrix products (linear and cosine heads); batch
norm, activations and pooling are not counted. FLOPs = 2 x MACs; papers' "GFLOPs" for ResNets
(4.1 for ResNet-50) are MACs. Pretrained weights are not loaded (shapes only). With --markdown it
also prints one row for the table in docs/BENCHMARKS.md.
"""

import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from core.errors import UserError
from data.registry import DATASETS
from engine.config import load_config
from engine.exits import CommandLine, reports_user_errors
from models import build_model, feature_shape_at

def num_classes_of(cfg, override=None) -> int:
    """--num-classes, else data.num_classes when set, else the count the dataset registered with."""
    if override:
        return override
    if cfg.data.num_classes:
        return cfg.data.num_classes
    known = DATASETS.info(cfg.data.name).get("num_classes")
    if known is None:
        raise UserError(f"data.name {cfg.data.name!r}: the number of classes is not known without the data; "
                        f"give --num-classes")
    return known


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def macs_per_image(model, image_size: int) -> int:
    """Multiply-accumulates of one evaluation forward (FlopCounterMode counts 2 FLOPs per MAC)."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size))
    return counter.get_total_flops() // 2


def model_info(cfg, num_classes: int) -> dict:
    """Parameters (training with RSG, evaluation without) and evaluation MACs per image."""
    counts = list(range(num_classes, 0, -1))           # any decreasing counts: only shapes matter here
    train_model = build_model(cfg, counts, load_pretrained_weights=False)
    eval_model = build_model(cfg, counts, with_rsg=False, load_pretrained_weights=False)
    info = {"backbone": cfg.model.backbone, "num_classes": num_classes, "image_size": cfg.data.image_size,
            "train_parameters": count_parameters(train_model), "eval_parameters": count_parameters(eval_model),
            "rsg_parameters": 0, "rsg_position": None, "rsg_input": None,
            "eval_macs": macs_per_image(eval_model, cfg.data.image_size)}
    if train_model.rsg is not None:
        info["rsg_parameters"] = count_parameters(train_model.rsg)
        info["rsg_position"] = train_model.rsg_position
        info["rsg_input"] = feature_shape_at(train_model.backbone, train_model.rsg_position, cfg.data.image_size)
    return info


def millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def report(info: dict) -> str:
    rsg = ("RSG off" if info["rsg_position"] is None else
           f"RSG at the input of {info['rsg_position']} ({' x '.join(map(str, info['rsg_input']))})")
    macs = info["eval_macs"]
    return "\n".join([
        f"model: {info['backbone']}, {info['num_classes']} classes, {info['image_size']} x {info['image_size']} "
        f"input, {rsg}",
        f"parameters, training (with RSG): {millions(info['train_parameters'])} ({info['train_parameters']:,}; "
        f"RSG {info['rsg_parameters']:,})",
        f"parameters, evaluation (no RSG): {millions(info['eval_parameters'])} ({info['eval_parameters']:,})",
        f"evaluation cost per image: {macs / 1e9:.3f} GMACs = {2 * macs / 1e9:.3f} GFLOPs "
        f"(FlopCounterMode: convolutions and matrix products)",
    ])


def markdown_row(info: dict) -> str:
    rsg_input = "-" if info["rsg_input"] is None else " x ".join(map(str, info["rsg_input"]))
    return (f"| {info['backbone']} | {info['num_classes']} | {info['image_size']} | {info['rsg_position'] or '-'} "
            f"({rsg_input}) | {millions(info['train_parameters'])} | {millions(info['rsg_parameters'])} | "
            f"{millions(info['eval_parameters'])} | {info['eval_macs'] / 1e9:.3f} |")


@reports_user_errors
def main(argv=None) -> int:
    parser = CommandLine(__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--num-classes", type=int, default=None,
                        help="needed for image_folder (or a split list without data.num_classes)")
    parser.add_argument("--markdown", action="store_true", help="also print a row for docs/BENCHMARKS.md")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    cfg = load_config(args.config, args.overrides)
    info = model_info(cfg, num_classes_of(cfg, args.num_classes))
    print(report(info))
    if args.markdown:
        print(markdown_row(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
