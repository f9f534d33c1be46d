"""Memory of RSG in the large-scale recipes: parameters, gradients, momentum, and one step's peak.

    python scripts/rsg_memory.py [--batches 256 64] [--recipes imagenet_lt places_lt inaturalist]

RSG sits at the input of layer4 (1024 x 14 x 14 at 224 px) with K = 15 centers and a contrastive
module of width 256. Parameters grow with the classes: centers (classes x K x C) and the
center-assignment maps (classes x C x K, plus a bias). SGD keeps a gradient and a momentum buffer
per parameter, so the optimizer state is 3x the fp32 parameter bytes.

The peak of one RSG forward and backward on the CPU is the largest number of bytes held by the
CPU allocator during the step above what was held before it (torch.profiler with
profile_memory=True; the allocation and free events replayed in order). The step is RSG alone,
with a stand-in for the classification loss on its output (the mean square of the generated
samples); gradients are None before it (optimizer.zero_grad() default), so the peak includes the
gradients backward allocates, and the CPU kernels' workspaces (im2col buffers of the 3x3
convolutions), which differ on a GPU. Device-independent figures are printed beside it: the bytes
RSG's autograd graph saves for backward (torch.autograd.graph.saved_tensors_hooks; RSG's input and
parameters excluded, they are held anyway) and the bytes of RSG's output, the enlarged batch that
the rest of the network then processes. The labels of the batch are drawn from an exponential long-tailed
profile with the recipe's class count and imbalance ratio, which sets how many samples RSG makes.
Prints Markdown tables for docs/BENCHMARKS.md.
"""

import platform
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from data.imbalance import imbalanced_counts
from engine.exits import CommandLine, reports_user_errors
from rsg import RSG

# classes, n_max, rho (exponential stand-ins for the real profiles: ImageNet-LT 1280..5,
# Places-LT 4980..5, iNaturalist 2018 1000..2)
RECIPES = {"imagenet_lt": (1000, 1280, 256), "places_lt": (365, 4980, 996), "inaturalist": (8142, 1000, 500)}
CHANNELS, SIZE = 1024, 14
# The large-scale recipes' RSG settings; generation from epoch 1, so that set_epoch(1) generates.
SETTINGS = {"frequent_ratio": 0.2, "num_centers": 15, "contrastive_channels": 256, "transfer_strength": 1.0,
            "threshold_epoch": 1}
MIB = 2 ** 20


def parameter_groups(rsg: RSG) -> dict:
    return {
        "centers": rsg.centers.numel(),
        "center assignment": rsg.assign_weight.numel() + rsg.assign_bias.numel(),
        "contrastive module": sum(p.numel() for p in rsg.contrastive.parameters()),
        "transformation T": rsg.transform.weight.numel(),
    }


def build_rsg(recipe: str) -> tuple[RSG, list]:
    classes, n_max, rho = RECIPES[recipe]
    counts = imbalanced_counts(n_max, classes, rho, "longtail")
    rsg = RSG(CHANNELS, **RSG.arguments_from(SETTINGS, counts))
    return rsg, counts


def one_step(rsg, features, targets) -> dict:
    """RSG forward and backward: the generated count, the bytes RSG saves for backward (storages
    other than its parameters' and its input's, which the backbone holds anyway) and its output's."""
    shared = {t.untyped_storage().data_ptr() for t in [features, *rsg.parameters()]}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in shared:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out, _, losses = rsg(features, targets)
        generated = out[len(targets):]
        stand_in = generated.square().mean() if len(generated) else out.new_zeros(())
        loss = stand_in + 0.1 * losses["cesc"] + 0.01 * losses["mv"]
    loss.backward()
    return {"generated": len(generated), "saved": sum(saved.values()), "output": 4 * out.numel()}


def peak_bytes(function) -> tuple[int, object]:
    """Largest CPU-allocator bytes held during `function()` above the level at its start."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = function()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    level = peak = 0
    for event in events:
        level += event.nbytes()
        peak = max(peak, level)
    return peak, result


def measure(recipe: str, batch: int, generating: bool) -> dict:
    torch.manual_seed(0)
    rsg, counts = build_rsg(recipe)
    rsg.train()
    rsg.set_epoch(1 if generating else 0)
    targets = torch.multinomial(torch.tensor(counts, dtype=torch.float), batch, replacement=True)
    features = torch.randn(batch, CHANNELS, SIZE, SIZE)
    started = time.perf_counter()
    peak, result = peak_bytes(lambda: one_step(rsg, features, targets))
    gradients = sum(4 * p.grad.numel() for p in rsg.parameters() if p.grad is not None)
    return dict(result, peak=peak, gradients=gradients, input=4 * features.numel(),
                seconds=time.perf_counter() - started)


def parameter_table(recipes) -> str:
    lines = ["| recipe | classes | centers | center assignment | contrastive | T | RSG parameters | "
             "fp32 weights | weights + gradients + momentum |", "|---|---|---|---|---|---|---|---|---|"]
    for recipe in recipes:
        rsg, _ = build_rsg(recipe)
        groups = parameter_groups(rsg)
        total = sum(groups.values())
        cells = " | ".join(f"{n / 1e6:.2f}M" for n in groups.values())
        lines.append(f"| {recipe} | {rsg.num_classes} | {cells} | {total / 1e6:.1f}M | {4 * total / MIB:,.0f} MiB | "
                     f"{12 * total / MIB:,.0f} MiB |")
    return "\n".join(lines)


@reports_user_errors
def main(argv=None) -> int:
    parser = CommandLine(__doc__)
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 64])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    args = parser.parse_args(argv)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads; torch {torch.__version__}")
    print(parameter_table(args.recipes))
    print()
    print("| recipe | batch N | phase | generated M | RSG input | RSG output (N + M) | saved for backward | "
          "gradients | CPU peak of forward + backward | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for recipe in args.recipes:
        for batch in args.batches:
            for generating in (False, True):
                print(step_row(recipe, batch, generating), flush=True)
    return 0


def step_row(recipe: str, batch: int, generating: bool) -> str:
    result = measure(recipe, batch, generating)
    phase = "from T_th" if generating else "before T_th"
    sizes = " | ".join(f"{result[k] / MIB:,.0f} MiB" for k in ("input", "output", "saved", "gradients", "peak"))
    return f"| {recipe} | {batch} | {phase} | {result['generated']} | {sizes} | {result['seconds']:.1f} |"


if __name__ == "__main__":
    sys.exit(main())
