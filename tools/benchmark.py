"""Training and evaluation throughput, with and without RSG, in every setting asked for, alternated.

    python scripts/benchmark.py --config configs/cifar10_lt/ldam_drw_rsg_r100.yaml [--steps 20] [key=value ...]
    python scripts/benchmark.py --config C --threads 1,2 --loaders device --precisions none,bf16 \
        --memory-formats contiguous,channels_last [--compile off,on]
    python scripts/benchmark.py --config configs/fast/cifar10_lt_ldam_drw_rsg_r100.yaml --full-run

A setting is one choice of threads, input path (`standard`: the torch DataLoader with its workers;
`device`: the whole split on the device, augmented there), precision (`train.amp`), memory format
(`train.channels_last`) and compilation (`train.compile`). For each setting it builds four rows:
training steps of the plain backbone, of RSG before T_th (L_CESC, contrastive module), of RSG from
T_th (generation, L_MV), and evaluation batches of the evaluation model (RSG removed). Then it runs
the rows in rounds, one step of every row per round, the order rotated each round, so that a
machine whose speed drifts (a shared CPU, a GPU's clocks) slows every row alike; a row's figure is
its batch size over its median step time. Steps are timed from before the batch is fetched to a
device synchronisation after the step. Each row is also given as a ratio: to the plain row of its
setting (what RSG costs), and to the same row of the first setting (what the setting gains).

`--price-diagnostics N` then prices RSG's per-step statistics (RSG.record_diagnostics) the same
way: one model from T_th, the statistics on and off alternated step by step. `--full-run` times a
whole run of the config (train.py's code path). Prints Markdown for docs/BENCHMARKS.md.
"""


import argparse
import itertools
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch

from data.builder import build_datasets
from data.imbalance import class_counts
from engine.config import load_config
from engine.diagnostics import find_rsg
from engine.evaluation import build_eval_loader
from engine.exits import CommandLine, reports_user_errors
from engine.loop import loss_weights, training_step
from engine.build import build_loaders, build_optimizer
from engine.run import fit
from engine.runtime import Precision, prepare_model, resolve_device
from losses import build_loss
from models import build_model

MODES = {"plain": (False, "before"), "RSG before T_th": (True, "before"), "RSG from T_th": (True, "after")}
EVALUATION = "evaluation"


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cycle_batches(loader, sampler=None):
    """Batches forever, epoch after epoch (the benchmark may want more steps than an epoch has)."""
    for epoch in itertools.count():
        if sampler is not None:
            sampler.set_epoch(epoch)
        yield from loader


@dataclass(frozen=True)
class Setting:
    """Where and how the steps run: what the benchmark compares."""
    threads: int
    loader: str
    amp: str
    channels_last: bool
    compile: bool

    def overrides(self) -> list:
        return [f"data.loader={self.loader}", f"train.amp={self.amp}",
                f"train.channels_last={str(self.channels_last).lower()}", f"train.compile={str(self.compile).lower()}"]

    def cells(self) -> str:
        memory = "channels_last" if self.channels_last else "contiguous"
        return f"| {self.threads} | {self.loader} | {self.amp} | {memory} | {'on' if self.compile else 'off'} |"


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


def evaluation_setup(cfg, data, device):
    """A step function for timing evaluation batches of the evaluation model (RSG removed)."""
    _, test_set, counts = data
    model = prepare_model(build_model(cfg, counts, with_rsg=False, load_pretrained_weights=False).to(device),
                          cfg.train, False, device).eval()
    precision = Precision(cfg.train.amp, device)
    batches = cycle_batches(build_eval_loader(cfg, test_set, device))

    @torch.no_grad()
    def step() -> int:
        images, _ = next(batches)
        with precision.autocast():
            model(images.to(device, non_blocking=True))
        return 0
    return model, step


@dataclass
class Row:
    setting: Setting
    mode: str
    step: object             # () -> generated samples of the step
    batch: int
    seconds: list = field(default_factory=list)
    generated: int = 0

    def rate(self) -> float:
        return self.batch / statistics.median(self.seconds)


def build_rows(args, base_overrides, settings) -> tuple:
    """Every (setting, mode) row with its own model, optimizer and loader; one copy of the data."""
    rows, data, device = [], None, None
    for setting in settings:
        cfg = load_config(args.config, base_overrides + setting.overrides())
        device = resolve_device(cfg.train.device)
        data = data or benchmark_data(cfg)
        torch.set_num_threads(setting.threads)
        for mode, (with_rsg, phase) in MODES.items():
            rows.append(Row(setting, mode, training_setup(cfg, data, device, with_rsg, phase)[1], cfg.data.batch_size))
        rows.append(Row(setting, EVALUATION, evaluation_setup(cfg, data, device)[1], cfg.data.eval_batch_size))
    return rows, device


def run_alternated(rows, device, steps: int, warmup: int) -> None:
    """One step of every row per round, the order rotated each round; each row's timed steps."""
    for index in range(warmup + steps):
        shift = index % len(rows)
        for row in rows[shift:] + rows[:shift]:
            torch.set_num_threads(row.setting.threads)
            synchronize(device)
            started = time.perf_counter()
            generated = row.step()
            synchronize(device)
            if index >= warmup:
                row.seconds.append(time.perf_counter() - started)
                row.generated += generated


def benchmark_table(args, base_overrides):
    threads = args.threads or [torch.get_num_threads()]
    settings = [Setting(count, loader, amp, memory == "channels_last", compiled == "on") for count, loader, amp, memory,
                compiled in itertools.product(threads, args.loaders, args.precisions, args.memory_formats, args.compile)]
    if "on" in args.compile:   # every row compiles its own model: the same code under new guards
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 16 * len(settings))
    rows, device = build_rows(args, base_overrides, settings)
    run_alternated(rows, device, args.steps, args.warmup)
    plain = {row.setting: row.rate() for row in rows if row.mode == "plain"}
    first = {row.mode: row.rate() for row in rows if row.setting == settings[0]}
    print("| threads | input path | precision | memory format | compile | mode | images/s | cost vs plain "
          "| speed vs first setting |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        rate = row.rate()
        label = f"{row.mode} ({row.generated / args.steps:.0f} generated/step)" if row.generated else row.mode
        cost = f"{plain[row.setting] / rate:.2f}x" if row.mode in MODES else ""
        print(f"{row.setting.cells()} {label} | {rate:.0f} | {cost} | {rate / first[row.mode]:.2f}x |")
    return device


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


def machine_description(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


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


def thread_counts(text):
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: positive integers, comma-separated (e.g. 1,2)")
    return values


@reports_user_errors
def main(argv=None):
    parser = CommandLine(__doc__)
    parser.add_argument("--config", default="configs/cifar10_lt/ldam_drw_rsg_r100.yaml")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--loaders", type=comma_list("standard", "device"), default="standard,device",
                        help="input paths to time, comma-separated (standard, device)")
    parser.add_argument("--precisions", type=comma_list("none", "bf16", "fp16"), default="none,bf16",
                        help="train.amp values to time, comma-separated (none, bf16, fp16)")
    parser.add_argument("--memory-formats", type=comma_list("contiguous", "channels_last"), default="contiguous",
                        help="train.channels_last values to time: contiguous, channels_last")
    parser.add_argument("--compile", type=comma_list("off", "on"), default="off",
                        help="train.compile values to time: off, on")
    parser.add_argument("--threads", type=thread_counts, default=None,
                        help="torch threads per setting, comma-separated, e.g. 1,2 (default: torch's current number)")
    parser.add_argument("--price-diagnostics", type=int, default=0, metavar="N",
                        help="also time N steps from T_th with RSG's statistics on and N off, alternated")
    parser.add_argument("--full-run", action="store_true", help="also time a whole run of the config")
    parser.add_argument("--full-run-dir", default="runs/benchmark_full_run")
    parser.add_argument("--skip-table", action="store_true", help="only the full run")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.root=... train.epochs=2")
    args = parser.parse_intermixed_args(argv)
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
