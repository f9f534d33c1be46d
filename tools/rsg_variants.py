"""RSG's two variants side by side on one batch of real feature maps: L_MV and the generated samples.

    python scripts/rsg_variants.py --checkpoint runs/cifar10_lt/ldam_drw_rsg_r100/seed0/last.pt [--batch-index 0]

The training model is rebuilt from the checkpoint (its config, class counts and weights), one
training batch (in the order of the threshold epoch) runs through the backbone up to RSG, and
RSG's input is given to RSG in the paper's variant (the checkpoint's RSG) and in the authors'
(rsg.variant=authors) with the same weights wherever the two have the same parameters: centers,
assignment map, T's weight (T's bias starts at 0), the contrastive module's second conv and linear
layer. The authors' first contrastive conv is 1x1, so it keeps the authors' initialisation. Each
departure alone (rsg.authors.Departures) gets a row too. Every forward reseeds the same generator,
so the variants draw the same pairing wherever their pairing rules agree.

Prints a Markdown table: per variant, s_new (M), L_MV and its three terms, and statistics of the
generated samples beside those of the real rare-class samples they were made from.
"""

import sys
from dataclasses import fields

import torch

from core.errors import UserError
from engine.exits import CommandLine, reports_user_errors
from engine.runtime import seed_everything
from data.imbalance import class_counts
from rsg import MV_TERMS, RSG, Departures
from tools.figures import training_batches
from tools.plot_features import load_training_model

# Each term of L_MV alone (rsg.MV_TERMS), by its column in the table.
TERMS = {column: tuple(term == kept for term in MV_TERMS)
         for column, kept in zip(("direction", "length", "contrastive"), MV_TERMS)}


def parse_args(argv=None):
    parser = CommandLine(__doc__)
    parser.add_argument("--checkpoint", required=True, help="last.pt or best.pt of a run trained with RSG")
    parser.add_argument("--batch-index", type=int, default=0, help="which training batch of the epoch (default 0)")
    parser.add_argument("--data-root", help="data.root, if the dataset moved")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch's augmentation and of RSG's pairing "
                                                            "draws (default 0)")
    return parser.parse_args(argv)


@torch.no_grad()
def rsg_input(model, loader, batch_index: int):
    """(features (N, C, H, W), targets (N,)) that RSG receives for training batch `batch_index`."""
    captured = {}
    handle = model.rsg.register_forward_pre_hook(lambda rsg, inputs: captured.update(x=inputs[0], y=inputs[1]))
    model.train()
    try:
        for index, (images, targets) in enumerate(loader):
            if index == batch_index:
                model(images, targets)
                break
    finally:
        handle.remove()
    if not captured:
        raise UserError(f"the training set has fewer than {batch_index + 1} batches; lower --batch-index")
    return captured["x"], captured["y"]


def variant_like(trained: RSG, variant, settings, counts) -> RSG:
    """An RSG of `variant`, otherwise built as the trained one (from its config's RSG `settings` and the
    training class `counts`), with the trained RSG's weights wherever the shapes agree."""
    rsg = RSG(trained.in_channels, **RSG.arguments_from(settings, counts) | {"variant": variant})
    own = rsg.state_dict()
    shared = {k: v for k, v in trained.state_dict().items() if k in own and own[k].shape == v.shape}
    rsg.load_state_dict(shared, strict=False)
    if rsg.transform.bias is not None:
        torch.nn.init.zeros_(rsg.transform.bias)
    return rsg


def measure(rsg: RSG, x, targets, seed: int) -> dict:
    """L_MV, its terms, the norm of its gradient wrt T's weight, and the generated samples'
    statistics for one forward of `rsg`."""
    rsg.train().set_epoch(rsg.threshold_epoch)

    def forward(terms):
        rsg.mv_terms = terms
        torch.manual_seed(seed)
        return rsg(x, targets)

    rsg.zero_grad()
    out, out_targets, losses = forward((True, True, True))
    losses["mv"].backward()                                 # what L_MV asks of T
    with torch.no_grad():
        row = {"M": len(out) - len(x), "mv": float(losses["mv"]), "grad_T": float(rsg.transform.weight.grad.norm()),
               **{name: float(forward(terms)[2]["mv"]) for name, terms in TERMS.items()}}
    generated = out[len(x):]
    rare = x[~rsg.is_frequent[targets]]
    row.update(generated_stats(generated.detach(), rare))
    return row


def generated_stats(generated, rare) -> dict:
    """Per-sample L2 norm (over C*H*W), mean channel-vector norm, mean and std of the values, for
    the generated samples and the real rare-class samples."""
    def stats(t):
        return {"norm": float(t.flatten(1).norm(dim=1).mean()), "channel_norm": float(t.norm(dim=1).mean()),
                "mean": float(t.mean()), "std": float(t.std())}
    return {f"{kind}_{k}": v for kind, t in (("gen", generated), ("rare", rare)) for k, v in stats(t).items()}


def table(rows: dict) -> str:
    header = ("| variant | M (s_new) | L_MV | direction | length | contrastive | \\|dL_MV/dT\\| | generated: norm / "
              "channel norm / mean / std | real rare: norm / channel norm / mean / std |")
    lines = [header, "|---" * 9 + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['M']} | {r['mv']:.2f} | {r['direction']:.2f} | {r['length']:.2f} | "
                     f"{r['contrastive']:.3f} | {r['grad_T']:.1f} | {r['gen_norm']:.2f} / {r['gen_channel_norm']:.3f} / "
                     f"{r['gen_mean']:.3f} / {r['gen_std']:.3f} | {r['rare_norm']:.2f} / "
                     f"{r['rare_channel_norm']:.3f} / {r['rare_mean']:.3f} / {r['rare_std']:.3f} |")
    return "\n".join(lines)


@reports_user_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = [f"data.root={args.data_root}"] if args.data_root else []
    cfg, model, train_set, _ = load_training_model(args.checkpoint, overrides)
    seed_everything(args.seed)             # the batch's augmentation: the same batch on every call
    x, targets = rsg_input(model, training_batches(cfg, train_set, cfg.rsg.threshold_epoch), args.batch_index)
    trained, counts = model.rsg, class_counts(train_set.targets, train_set.num_classes)
    variants = {name: variant_like(trained, name, cfg.rsg, counts) for name in ("paper", "authors")}
    for field in fields(Departures):
        variants[f"paper + {field.name} only"] = variant_like(trained, Departures(**{field.name: True}), cfg.rsg,
                                                               counts)
    rows = {name: measure(rsg, x, targets, args.seed) for name, rsg in variants.items()}
    frequent = int(trained.is_frequent[targets].sum())
    print(f"{cfg.name}: batch {args.batch_index} of epoch {cfg.rsg.threshold_epoch}, RSG input "
          f"{tuple(x.shape)}, {frequent} frequent and {len(targets) - frequent} rare samples; "
          f"checkpoint {args.checkpoint}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
