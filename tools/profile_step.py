"""A torch.profiler summary of real training steps before T_th and from it: the ops that take the
most time, the host synchronisations the CUDA runtime saw, and the gaps where the device waited
for the host.

    python scripts/profile_step.py --config configs/fast/cifar10_lt_ldam_drw_rsg_r100.yaml [--steps 10] \
        [--trace-dir DIR] [key=value ...]

The run is built as train.py builds it (engine.build.build_run: the config's loader, model, loss,
optimizer, precision); each phase sets its epoch (start_epoch_state: lr, class weights, RSG's phase),
runs `--warmup` steps, then profiles `--steps` steps of engine.loop.training_step. On a GPU the ops
are ranked by their own device time and the device's idle time between kernels is reported (the
host gaps); on the CPU there are no kernels and the ops are ranked by their own CPU time.
`--trace-dir` also writes each phase's Chrome trace (chrome://tracing, Perfetto).
"""

from __future__ import annotations

import os
import sys
import time

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from core.errors import UserError
from engine.config import load_config
from engine.distributed import DistributedContext
from engine.exits import CommandLine, reports_user_errors
from engine.loop import loss_weights, training_step
from engine.build import build_run
from engine.run import start_epoch_state
from engine.runtime import resolve_device, set_determinism

# CUDA runtime calls in which the host waits for the device (a blocking copy is cudaMemcpyAsync
# followed by cudaStreamSynchronize)
SYNC_CALLS = {"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy"}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batches_of(run):
    """The training loader's batches, again and again (more steps than an epoch has)."""
    while True:
        yield from run.data.train_loader


def profile_phase(run, epoch: int, steps: int, warmup: int):
    """(profiler, seconds per step, generated samples per step) over `steps` steps of `epoch`."""
    _, weights = start_epoch_state(run, epoch, 0)
    run.model.train()
    terms = loss_weights(run.cfg)
    batches = batches_of(run)

    def step():
        images, targets = next(batches)
        images, targets = images.to(run.device, non_blocking=True), targets.to(run.device, non_blocking=True)
        trainer = run.trainer
        return training_step(run.model, trainer.criterion, trainer.optimizer, images, targets, weights, terms,
                             trainer.precision)[2]

    for _ in range(warmup):
        step()
    synchronize(run.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if run.device.type == "cuda" else [])
    started = time.perf_counter()
    with profile(activities=activities) as profiler:
        generated = sum(step() for _ in range(steps))
        synchronize(run.device)
    return profiler, (time.perf_counter() - started) / steps, generated / steps


def device_gaps(profiler, top: int = 5):
    """(busy us, span us, [(gap us, kernel before, kernel after)]) of the device's kernels, or None."""
    kernels = sorted(((e.time_range.start, e.time_range.end, e.name) for e in profiler.events()
                      if e.device_type == DeviceType.CUDA), key=lambda k: k[0])
    if not kernels:
        return None
    busy, gaps = 0.0, []
    covered_until, last_name = kernels[0][0], kernels[0][2]
    for start, end, name in kernels:
        if start > covered_until:
            gaps.append((start - covered_until, last_name, name))
        busy += max(end - max(start, covered_until), 0)
        if end > covered_until:
            covered_until, last_name = end, name
    return busy, covered_until - kernels[0][0], sorted(gaps, reverse=True)[:top]


def sync_counts(profiler, steps: int) -> dict:
    """{CUDA runtime call: calls per step} for the calls that wait for the device."""
    return {a.key: a.count / steps for a in profiler.key_averages() if a.key in SYNC_CALLS}


def report(title: str, profiler, seconds: float, generated: float, steps: int, device, rows: int) -> None:
    print(f"## {title}: {seconds * 1000:.1f} ms per step, {generated:.0f} generated samples per step\n")
    on_gpu = device.type == "cuda"
    print("```")
    print(profiler.key_averages().table(sort_by="self_device_time_total" if on_gpu else "self_cpu_time_total",
                                        row_limit=rows))
    print("```\n")
    gaps = device_gaps(profiler)
    if gaps is None:
        print("No device kernels (a CPU run): the ops above are ranked by their own CPU time; host gaps "
              "and CUDA synchronisations need a GPU.\n")
        return
    busy, span, largest = gaps
    print(f"Device busy {busy / 1000 / steps:.2f} ms per step of a {span / 1000 / steps:.2f} ms kernel span: "
          f"idle {100 * (1 - busy / span):.0f}% (the host gaps).")
    for gap, before, after in largest:
        print(f"- {gap:.0f} us idle between `{before[:60]}` and `{after[:60]}`")
    counts = sync_counts(profiler, steps)
    print("CUDA synchronisations per step: " + (", ".join(f"{k} {v:g}" for k, v in counts.items()) or "none") + "\n")


@reports_user_errors
def main(argv=None) -> int:
    parser = CommandLine(__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=10, help="profiled steps per phase")
    parser.add_argument("--warmup", type=int, default=5, help="steps before profiling (cuDNN autotuning, caches)")
    parser.add_argument("--rows", type=int, default=15, help="ops listed per phase")
    parser.add_argument("--trace-dir", default=None, help="also write each phase's Chrome trace here")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.root=...")
    args = parser.parse_intermixed_args(argv)
    if args.steps < 1 or args.warmup < 0:
        raise UserError("--steps must be at least 1 and --warmup at least 0")
    cfg = load_config(args.config, args.overrides)
    device = resolve_device(cfg.train.device)
    set_determinism(cfg.train.deterministic)
    run = build_run(cfg, DistributedContext(), device, resuming=False)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# Training step profile: {args.config}\n\ndevice {name}; torch {torch.__version__}; batch "
          f"{cfg.data.batch_size}; loader {cfg.data.loader}; amp {cfg.train.amp}; overrides "
          f"{' '.join(args.overrides) or '-'}\n")
    phases = [("before T_th", 0)]
    if cfg.rsg.enabled:
        phases.append(("from T_th", cfg.rsg.threshold_epoch))
    for title, epoch in phases:
        profiler, seconds, generated = profile_phase(run, epoch, args.steps, args.warmup)
        report(f"{title} (epoch {epoch})", profiler, seconds, generated, args.steps, device, args.rows)
        if args.trace_dir:
            os.makedirs(args.trace_dir, exist_ok=True)
            profiler.export_chrome_trace(os.path.join(args.trace_dir, f"epoch{epoch}.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
