"""RSG's features in 2-D: real frequent-class, real rare-class and generated samples at RSG's
position, pooled (global average) and projected with one PCA.

    python scripts/plot_features.py --checkpoint runs/cifar10_lt/ldam_drw_rsg_r100/seed0/last.pt [--batches 8]

The training model is rebuilt WITH RSG from the checkpoint (its stored config and class counts, all
its weights), RSG is set to its threshold epoch so that it generates, and a few training batches
(in the order of that epoch) run in train mode without gradients; a forward hook on RSG collects
its input and the generated samples it appends. The figure goes to --out (default
<run>/rsg_features.png) and to the run's TensorBoard.
"""

import os
import sys

import torch

from core.errors import UserError
from data.builder import build_datasets
from data.imbalance import class_counts
from engine.checkpoint import load_checkpoint, load_model_weights, stored_config
from engine.exits import CommandLine, reports_user_errors
from engine.runtime import resolve_device
from models import build_model, feature_shape_at
from tools.figures import feature_figure, log_figure, pca_2d, require_pyplot, rsg_features, training_batches


def parse_args(argv=None):
    parser = CommandLine(__doc__)
    parser.add_argument("--checkpoint", required=True, help="last.pt or best.pt of a run trained with RSG")
    parser.add_argument("--batches", type=int, default=8, help="training batches to run (default 8)")
    parser.add_argument("--out", help="PNG file (default: <run>/rsg_features.png)")
    parser.add_argument("--data-root", help="data.root, if the dataset moved")
    parser.add_argument("--device", help="cpu, cuda, ... (default: the run's train.device)")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not add the figure to TensorBoard")
    return parser.parse_args(argv)


def load_training_model(path: str, overrides: list):
    """(config, model with RSG and every weight of the checkpoint, training set, epochs trained)."""
    state = load_checkpoint(path)
    cfg = stored_config(state, path, overrides)
    if not cfg.rsg.enabled:
        raise UserError(f"{path}: the run was trained without RSG (rsg.enabled: false); nothing to plot")
    model = build_model(cfg, state["class_counts"], with_rsg=True, load_pretrained_weights=False)
    load_model_weights(model, state["model"], path, f"backbone {cfg.model.backbone} with RSG")
    train_set, _ = build_datasets(cfg.data)
    if class_counts(train_set.targets, train_set.num_classes) != list(state["class_counts"]):
        raise UserError(f"{path}: the training set built now does not have the run's class counts; check data.*")
    return cfg, model, train_set, state["epoch"]


@reports_user_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    require_pyplot()
    overrides = [f"data.root={args.data_root}"] if args.data_root else []
    cfg, model, train_set, trained = load_training_model(args.checkpoint, overrides)
    device = resolve_device(args.device or cfg.train.device)
    torch.manual_seed(cfg.train.seed)      # RSG's pairing draws
    epoch = cfg.rsg.threshold_epoch
    model.to(device).set_epoch(epoch)      # from T_th on, RSG generates
    groups = rsg_features(model, training_batches(cfg, train_set, epoch), device, args.batches)
    if not len(groups["generated"]):
        raise UserError("RSG generated no sample in these batches (no frequent or no rare class in them); "
                        "try more --batches")
    shape = "x".join(map(str, feature_shape_at(model.backbone, model.rsg_position, cfg.data.image_size)))
    # The title names the checkpoint's own epoch; RSG is put in its generating phase (epoch T_th)
    # whatever the checkpoint's epoch, which the title says too.
    title = (f"{cfg.name}, checkpoint after {trained} epoch{'' if trained == 1 else 's'}: RSG's input at "
             f"{model.rsg_position} ({shape}), pooled, 2-D PCA; {args.batches} training batches, RSG "
             f"generating (set to its phase from T_th = {epoch})")
    figure = feature_figure(pca_2d(groups), title)
    run_dir = os.path.dirname(os.path.abspath(args.checkpoint))
    out = args.out or os.path.join(run_dir, "rsg_features.png")
    figure.savefig(out, dpi=120)
    if not args.no_tensorboard:
        log_figure(run_dir, "figures/rsg_features", figure, trained)
    print(", ".join(f"{name} {len(values)}" for name, values in groups.items()) + f" samples; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
