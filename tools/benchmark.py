"""Training and evaluation throughput, with and without RSG, on the standard and the device path.

    python scripts/benchmark.py --config configs/cifar10_lt/ldam_drw_rsg_r100.yaml [--steps 20] [key=value ...]
    python scripts/benchmark.py --config configs/fast/cifar10_lt_ldam_drw_rsg_r100.yaml --full-run

For each input path (`standard`: the torch DataLoader with its workers; `device`: the whole split on
the device, augmented there) and precision (fp32, bf16), it times training steps of the plain
backbone, of RSG before T_th (L_CESC, contrastive module) and of RSG from T_th (generation, L_MV),
then evaluation images/s of the evaluation model (RSG removed). `--price-diagnostics N` then prices
RSG's per-step statistics (RSG.record_diagnostics): N steps from T_th with them on and N with them
off, alternated step by step in one model, so the machine's drift hits both alike. Timing starts after warm-up steps and
ends with a device synchronisation. `--full-run` then times a whole run of the config (train.py's
code path, evaluating every `train.eval_every` epochs). Prints Markdown for docs/BENCHMARKS.md.
"""

import argparse
import itertools
import platform
import statistics
import sys
import time

import torch

from data.builder import build_datasets
from data.imbalance import class_counts
from engine.config import load_config
from engine.diagnostics import find_rsg
from engine.evaluation import build_eval_loader, predict
from engine.exits import reports_user_errors
from engine.loop import loss_weights, training_step
from engine.run import build_loaders, build_optimizer, fit
from engine.runtime import Precision, prepare_model, resolve_device
from losses import build_loss
from models import build_model

MODES = {"plain": (False, "before"), "RSG before T_th": (True, "before"), "RSG from T_th": (True, "after")}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cycle_batches(loader, sampler):
    """Batches forever, epoch after epoch (the benchmark may want more steps than an epoch has)."""
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        yield from loader


def training_setup(cfg, data, device, with_rsg, phase):
    """(model, a step function returning its generated count) for timing training steps."""
    train_set, test_set, counts = data
    model = prepare_model(build_model(cfg, counts, with_rsg=with_rsg, load_pretrained_weights=False).to(device),
                          cfg.train, False, device).train()
    model.set_epoch(cfg.rsg.threshold_epoch if phase == "after" else 0)
    criterion = build_loss(cfg, counts).to(device)
    optimizer = build_optimizer(cfg, model)
    precision = Precision(cfg.train.amp, device)
    loader, _, sampler, _ = build_loaders(cfg, train_set, test_set, device)
    batches = cycle_batches(loader, sampler)

    def step() -> int:
        images, targets = next(batches)
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        return training_step(model, criterion, optimizer, images, targets, None, loss_weights(cfg), precision)[2]
    return model, step


def time_training(cfg, data, device, with_rsg, phase, steps, warmup):
    """Training images/s (real samples) and generated samples per step."""
    _, step = training_setup(cfg, data, device, with_rsg, phase)
    generated = 0
    for index in range(warmup + steps):
        if index == warmup:
            synchronize(device)
            started = time.perf_counter()
        batch_generated = step()
        generated += batch_generated if index >= warmup else 0
    synchronize(device)
    return steps * cfg.data.batch_size / (time.perf_counter() - started), generated / steps


def price_diagnostics(cfg, data, device, steps, warmup):
    """Median seconds of a step from T_th with RSG's statistics on, and off: one model, the two
    settings alternated step by step."""
    model, step = training_setup(cfg, data, device, True, "after")
    rsg, seconds = find_rsg(model), {True: [], False: []}
    for index in range(warmup + 2 * steps):
        rsg.record_diagnostics = index % 2 == 0
        synchronize(device)
        started = time.perf_counter()
        step()
        synchronize(device)
        if index >= warmup:
            seconds[rsg.record_diagnostics].append(time.perf_counter() - started)
    return statistics.median(seconds[True]), statistics.median(seconds[False])


def benchmark_data(cfg):
    """(training set, evaluation set, training class counts): what the timing functions take as `data`."""
    train_set, test_set = build_datasets(cfg.data)
    return train_set, test_set, class_counts(train_set.targets, train_set.num_classes)


def time_evaluation(cfg, data, device):
    """Evaluation images/s over the whole evaluation split (after one warm-up pass)."""
    _, test_set, counts = data
    model = prepare_model(build_model(cfg, counts, with_rsg=False, load_pretrained_weights=False).to(device),
                          cfg.train, False, device)
    loader = build_eval_loader(cfg, test_set, device)
    precision = Precision(cfg.train.amp, device)
    predict(model, loader, device, precision=precision)
    synchronize(device)
    started = time.perf_counter()
    predict(model, loader, device, precision=precision)
    synchronize(device)
    return len(test_set) / (time.perf_counter() - started)


def machine_description(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def benchmark_table(args, base_overrides):
    print("| input path | precision | mode | train images/s | cost vs plain | eval images/s |")
    print("|---|---|---|---|---|---|")
    data = None
    for loader, amp in itertools.product(args.loaders, args.precisions):
        cfg = load_config(args.config, base_overrides + [f"data.loader={loader}", f"train.amp={amp}"])
        device = resolve_device(cfg.train.device)
        if data is None:
            data = benchmark_data(cfg)
        plain = None
        for mode, (with_rsg, phase) in MODES.items():
            rate, generated = time_training(cfg, data, device, with_rsg, phase, args.steps, args.warmup)
            plain = plain or rate
            label = f"{mode} ({generated:.0f} generated/step)" if generated else mode
            evaluation = f"{time_evaluation(cfg, data, device):.0f}" if mode == "plain" else ""
            print(f"| {loader} | {amp} | {label} | {rate:.0f} | {plain / rate:.2f}x | {evaluation} |", flush=True)
    return device


def print_diagnostics_price(args, cfg):
    on, off = price_diagnostics(cfg, benchmark_data(cfg), resolve_device(cfg.train.device), args.price_diagnostics,
                                args.warmup)
    print(f"\nRSG's diagnostics, {args.price_diagnostics} steps from T_th each way, alternated "
          f"({cfg.data.loader} loader, amp {cfg.train.amp}): median step {on * 1000:.1f} ms with them, "
          f"{off * 1000:.1f} ms without (on / off {on / off:.3f})")


def full_run(args, base_overrides):
    cfg = load_config(args.config, base_overrides + [f"output_dir={args.full_run_dir}"])
    started = time.perf_counter()
    report = fit(cfg, overwrite=True)   # the full-run folder is the benchmark's scratch space: replaced each time
    seconds = time.perf_counter() - started
    final = f"final top-1 {report.top1:.2f}%, error {100 - report.top1:.2f}%" if report else "stopped before its end"
    print(f"\nfull run: {cfg.train.epochs} epochs of {args.config} in {seconds:.1f} s wall "
          f"(evaluating every {cfg.train.eval_every} epoch(s)); {final}")


def comma_list(*choices):
    def parse(text):
        values = [v for v in text.split(",") if v]
        unknown = [v for v in values if v not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(choices)}")
        return values
    return parse


@reports_user_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/cifar10_lt/ldam_drw_rsg_r100.yaml")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per line")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--loaders", type=comma_list("standard", "device"), default="standard,device",
                        help="input paths to time, comma-separated (standard, device)")
    parser.add_argument("--precisions", type=comma_list("none", "bf16", "fp16"), default="none,bf16",
                        help="train.amp values to time, comma-separated (none, bf16, fp16)")
    parser.add_argument("--price-diagnostics", type=int, default=0, metavar="N",
                        help="also time N steps from T_th with RSG's statistics on and N off, alternated")
    parser.add_argument("--full-run", action="store_true", help="also time a whole run of the config")
    parser.add_argument("--full-run-dir", default="runs/benchmark_full_run")
    parser.add_argument("--skip-table", action="store_true", help="only the full run")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.root=... train.epochs=2")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    device = resolve_device(cfg.train.device)
    print(f"device: {machine_description(device)}; torch {torch.__version__}; config {args.config}; "
          f"overrides {' '.join(args.overrides) or '-'}; batch {cfg.data.batch_size}; {args.steps} timed steps\n")
    if not args.skip_table:
        benchmark_table(args, args.overrides)
    if args.price_diagnostics:
        print_diagnostics_price(args, cfg)
    if args.full_run:
        full_run(args, args.overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
