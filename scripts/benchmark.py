"""Training and evaluation throughput of a configured model, with and without RSG.

    python scripts/benchmark.py --config configs/cifar10_lt/ldam_drw_rsg_r100.yaml [--steps 20] [key=value ...]

Measures the model step alone (batches are made on the device beforehand, labels drawn from the
config's long-tailed class distribution so RSG sees realistic batches), in three training modes:
plain backbone, RSG before T_th (L_CESC with the contrastive module) and RSG from T_th (generation
and L_MV); then evaluation images/s of the evaluation model (the plain backbone, RSG removed).
With --loader it also times the real DataLoader path (decoding and augmentation included).
Prints a Markdown table for docs/BENCHMARKS.md.
"""

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from data.imbalance import imbalanced_counts  # noqa: E402
from engine.config import load_config  # noqa: E402
from engine.errors import UserError  # noqa: E402
from engine.loop import training_step  # noqa: E402
from engine.run import build_optimizer  # noqa: E402
from engine.runtime import resolve_device  # noqa: E402
from losses import build_loss  # noqa: E402
from models import build_model  # noqa: E402

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10}
N_MAX = {"cifar10": 5000, "cifar100": 500, "digits": 140}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def long_tailed_counts(cfg):
    name = cfg.data.name if cfg.data.name in NUM_CLASSES else "cifar10"
    return imbalanced_counts(N_MAX[name], NUM_CLASSES[name], cfg.data.imbalance_ratio, cfg.data.profile)


def random_batches(cfg, counts, device, count):
    """`count` (images, targets) batches on the device, targets drawn with the training frequencies."""
    probabilities = torch.tensor(counts, dtype=torch.float)
    size = cfg.data.image_size
    return [(torch.randn(cfg.data.batch_size, 3, size, size, device=device),
             torch.multinomial(probabilities, cfg.data.batch_size, replacement=True).to(device))
            for _ in range(count)]


def time_training(cfg, counts, device, with_rsg, epoch, steps, warmup):
    model = build_model(cfg, counts, with_rsg=with_rsg).to(device).train()
    model.set_epoch(epoch)
    criterion = build_loss(cfg, counts).to(device)
    optimizer = build_optimizer(cfg, model)
    batches = random_batches(cfg, counts, device, 4)
    rsg_weights = (cfg.rsg.cesc_weight, cfg.rsg.mv_weight)
    generated = 0
    for index in range(warmup + steps):
        if index == warmup:
            synchronize(device)
            started = time.perf_counter()
        images, targets = batches[index % len(batches)]
        _, _, batch_generated = training_step(model, criterion, optimizer, images, targets, None, rsg_weights)
        generated += batch_generated if index >= warmup else 0
    synchronize(device)
    elapsed = time.perf_counter() - started
    return steps * cfg.data.batch_size / elapsed, generated / steps


@torch.no_grad()
def time_evaluation(cfg, counts, device, steps, warmup):
    model = build_model(cfg, counts, with_rsg=False).to(device).eval()
    size = cfg.data.image_size
    images = torch.randn(cfg.data.eval_batch_size, 3, size, size, device=device)
    for index in range(warmup + steps):
        if index == warmup:
            synchronize(device)
            started = time.perf_counter()
        model(images)
    synchronize(device)
    return steps * cfg.data.eval_batch_size / (time.perf_counter() - started)


def time_loader(cfg, batches):
    from data.builder import build_datasets
    from engine.run import build_loaders

    train_set, test_set = build_datasets(cfg.data)
    loader, _, sampler, _ = build_loaders(cfg, train_set, test_set, torch.device("cpu"))
    sampler.set_epoch(0)
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    started = time.perf_counter()
    seen = 0
    for _ in range(batches):
        images, _ = next(iterator)
        seen += len(images)
    return seen / (time.perf_counter() - started)


def machine_description(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/cifar10_lt/ldam_drw_rsg_r100.yaml")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--loader", type=int, default=0, help="also time N batches of the real DataLoader")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        device = resolve_device(cfg.train.device)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    counts = long_tailed_counts(cfg)
    plain, _ = time_training(cfg, counts, device, False, 0, args.steps, args.warmup)
    before, _ = time_training(cfg, counts, device, True, 0, args.steps, args.warmup)
    after, generated = time_training(cfg, counts, device, True, cfg.rsg.threshold_epoch, args.steps, args.warmup)
    evaluation = time_evaluation(cfg, counts, device, args.steps, args.warmup)
    print(f"device: {machine_description(device)}; torch {torch.__version__}; config {args.config}; "
          f"batch {cfg.data.batch_size}; {args.steps} timed steps")
    print("| mode | images/s | cost vs plain |")
    print("|---|---|---|")
    print(f"| train, plain {cfg.model.backbone} | {plain:.0f} | 1.00x |")
    print(f"| train, RSG before T_th (CESC) | {before:.0f} | {plain / before:.2f}x |")
    print(f"| train, RSG from T_th ({generated:.0f} generated/step) | {after:.0f} | {plain / after:.2f}x |")
    print(f"| evaluation (RSG removed) | {evaluation:.0f} | |")
    if args.loader:
        print(f"| DataLoader, {cfg.data.num_workers} workers ({cfg.data.name}) | {time_loader(cfg, args.loader):.0f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
