"""Run many training commands at once, a few per device: the scheduler behind
`scripts/paper_tables.py --jobs-per-gpu N`.

A slot is a place where one run executes: a GPU (the run sees only that GPU, through
CUDA_VISIBLE_DEVICES) or a share of the CPU cores. `--jobs-per-gpu N` makes N slots per GPU, or N
CPU slots without GPUs; each run also gets OMP_NUM_THREADS = cores / slots, so that N processes do
not each start one thread per core. Runs go to free slots in order; when one ends, the next starts.

A run is a list of steps (train, then evaluate for Tables 7-9); a failed step ends its run and is
reported, the other runs go on (`fail_fast` stops everything instead). SIGINT or SIGTERM to the
runner (Ctrl-C) is forwarded once to every running command, which saves its checkpoint and exits
(train.py's StopRequest), and no new run starts. Each command runs in its own session, so a Ctrl-C
in the terminal reaches it only through the runner, exactly once: a second signal to train.py
means "stop now, without saving".

It also runs any list of commands, one per line (no shell; `#` starts a comment line):

    python scripts/job_pool.py --gpus 1 --jobs-per-gpu 3 commands.txt

A command's log is `<its output_dir=...>.log`, else `<commands file>.line<N>.log`. The pool keeps
no record of them: running the file again runs every line again, so the summary names the lines
that did not finish.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository root

from core.errors import UserError
from engine.exits import CommandLine, reports_user_errors
from tools.run_planning import gpu_count, jobs_per_device

FINISHED, FAILED, INTERRUPTED, NOT_STARTED = "finished", "failed", "interrupted", "not started"


@dataclass(frozen=True)
class Slot:
    label: str                      # where its runs execute, for the messages ("GPU 3", "CPU")
    env: dict                       # environment variables set for its commands


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. under Slurm or taskset)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def thread_env(threads: int) -> dict:
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def device_slots(gpus: int, jobs_per_gpu: int, visible: list, cores: int) -> list[Slot]:
    """`jobs_per_gpu` slots on each of the first `gpus` ids of `visible` (the CUDA device ids or
    UUIDs the runner may use), or `jobs_per_gpu` CPU slots when gpus == 0 (CUDA hidden). Slots
    alternate between GPUs, so that fewer runs than slots still spread over every GPU. Each slot
    gets a fair share of the cores, at least one thread."""
    if jobs_per_gpu < 1:
        raise ValueError(f"jobs_per_gpu must be at least 1, got {jobs_per_gpu}")
    if gpus > len(visible):
        raise ValueError(f"{gpus} GPUs asked for, {len(visible)} visible")
    count = jobs_per_gpu * max(gpus, 1)
    threads = thread_env(max(cores // count, 1))
    if gpus == 0:
        return [Slot("CPU", dict(threads, CUDA_VISIBLE_DEVICES=""))
                for _ in range(count)]
    return [Slot(f"GPU {device}", dict(threads, CUDA_VISIBLE_DEVICES=str(device)))
            for _ in range(jobs_per_gpu) for device in visible[:gpus]]


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use: CUDA_VISIBLE_DEVICES's entries (ids or UUIDs, up to
    the first invalid one, as CUDA reads it) when set, else 0 .. torch.cuda.device_count() - 1."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        import torch

        return [str(index) for index in range(torch.cuda.device_count())]
    devices = []
    for entry in (e.strip() for e in listed.split(",")):
        if not entry or entry.startswith("-"):
            break
        devices.append(entry)
    return devices


def runner_slots(gpus: Optional[int], jobs_per_gpu: Optional[int]) -> list[Slot]:
    """Where the runs execute: one run at a time on what --gpus names, or --jobs-per-gpu per GPU."""
    if gpus is not None and gpus < 0:
        raise UserError(f"--gpus {gpus}: give 0 (the CPU) or a number of GPUs")
    if jobs_per_gpu is None:
        if gpus == 0:
            return [Slot("the CPU", {"CUDA_VISIBLE_DEVICES": ""})]
        return [Slot(f"{gpus} GPUs (torchrun)" if gpus and gpus > 1 else "the configured device", {})]
    if jobs_per_gpu < 1:
        raise UserError(f"--jobs-per-gpu {jobs_per_gpu}: give the number of runs to keep going per GPU, 1 or more")
    visible = visible_gpus() if gpus != 0 else []
    gpus = len(visible) if gpus is None else gpus
    if gpus > len(visible):
        source = ("CUDA_VISIBLE_DEVICES=" + os.environ["CUDA_VISIBLE_DEVICES"]
                  if "CUDA_VISIBLE_DEVICES" in os.environ else "torch.cuda.device_count()")
        fewer = f"--gpus {len(visible)} or fewer, or " if visible else ""
        raise UserError(f"--gpus {gpus}: {len(visible)} CUDA devices are visible ({source}); use {fewer}"
                        f"--gpus 0 to run on the CPU")
    return device_slots(gpus, jobs_per_gpu, visible, available_cores())


def describe_slots(slots: list[Slot]) -> str:
    labels = [slot.label for slot in slots]
    counts = {label: labels.count(label) for label in labels}
    threads = slots[0].env.get("OMP_NUM_THREADS")  # the same in every slot
    where = ", ".join(f"{label} x{n}" if n > 1 else label for label, n in counts.items())
    return f"{len(slots)} at a time on {where}" + (f" ({threads} threads each)" if threads else "")


@dataclass
class Task:
    """One run: its steps, run one after another in one slot."""
    name: str                                  # what the messages call it (the run folder)
    steps: list                                # [(argv, stdout file or None)]; a failed step ends the run
    log: Optional[str] = None                  # file that receives stdout and stderr (appended); None: the terminal
    note: str = ""                             # shown when it starts, e.g. "resumes after epoch 12"
    env: dict = field(default_factory=dict)    # extra environment variables for every step
    finished_anyway: Optional[Callable[[], bool]] = None   # after an interruption: is there nothing left?


@dataclass
class Outcome:
    task: Task
    status: str = NOT_STARTED
    exit_status: Optional[int] = None          # of the step that failed
    seconds: float = 0.0
    error: str = ""                            # the failed step's last output line, when logged
    started: float = 0.0                       # time.time() of its first step


@dataclass
class Running:
    slot: Slot
    outcome: Outcome
    step: int
    process: subprocess.Popen
    files: list                                # open files handed to the process
    started: float
    log_start: int = 0                         # where the process's output begins in the log
    signals_sent: int = 0                      # how many of the runner's signals it has been sent


@contextlib.contextmanager
def signals_blocked():
    """SIGINT and SIGTERM held back (delivered on leaving) in this thread."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def last_line(path: Optional[str], start: int = 0) -> str:
    """The last non-empty line a log got from offset `start` on (the step's own output, not the
    pool's header or an earlier attempt's); progress bars' carriage returns split lines too."""
    if not path or not os.path.isfile(path):
        return ""
    with open(path, "rb") as f:
        f.seek(max(os.path.getsize(path) - 8192, start))
        text = f.read().decode("utf-8", "replace")
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def describe_status(status: int) -> str:
    if status < 0:
        return f"killed by signal {-status}"
    return f"exit status {status}"


class Pool:
    """Runs tasks in slots; `run()` returns one Outcome per task, in order."""

    def __init__(self, tasks: list[Task], slots: list[Slot], fail_fast: bool = False, out=None,
                 poll_seconds: float = 0.2):
        self.outcomes = [Outcome(task) for task in tasks]
        self.slots, self.fail_fast, self.poll_seconds = slots, fail_fast, poll_seconds
        self.out = out or sys.stdout
        self.running: list[Running] = []
        self.signals: list[int] = []       # received by the runner, in order
        self.announced = 0                 # how many of them have been reported
        self.stopping = False              # no new run or step starts

    # -- messages ------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=self.out, flush=True)

    def number(self, outcome: Outcome) -> str:
        return f"{self.outcomes.index(outcome) + 1}/{len(self.outcomes)}"

    # -- starting and ending steps ---------------------------------------------------------------

    def start(self, slot: Slot, outcome: Outcome, step: int) -> None:
        task = outcome.task
        argv, stdout_path = task.steps[step]
        env = dict(os.environ, **slot.env, **task.env)
        files = []
        log, log_start = None, 0
        if task.log:
            os.makedirs(os.path.dirname(os.path.abspath(task.log)), exist_ok=True)
            log = open(task.log, "a")
            shown = " ".join(f"{k}={v}" for k, v in sorted(slot.env.items()))
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} on {slot.label} ({shown}): "
                      f"{subprocess.list2cmdline(argv)}\n")
            log.flush()
            log_start = log.tell()        # before the process writes: its offset is shared with ours
            files.append(log)
        stdout = log
        if stdout_path:   # written whole or not at all (renamed on success)
            stdout = open(stdout_path + ".partial", "w")
            files.append(stdout)
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=log,
                                   start_new_session=True)
        entry = Running(slot, outcome, step, process, files, time.time(), log_start)
        # Signals are blocked while the process joins the list (not around Popen: the child would
        # inherit the mask), so that it gets every signal the runner received, exactly once.
        with signals_blocked():
            self.running.append(entry)
            self.forward_signals(entry)
        if step == 0:
            outcome.started = time.time()
            note = f" ({task.note})" if task.note else ""
            where = f"; log {task.log}" if task.log else ""
            self.say(f"start {self.number(outcome)} {task.name} on {slot.label}{note}{where}")
            if not task.log:
                print(subprocess.list2cmdline(argv), file=self.out, flush=True)

    def end(self, entry: Running, status: int) -> None:
        """A step's process has exited with `status`: go on with the run, or record how it ended."""
        self.running.remove(entry)
        for f in entry.files:
            f.close()
        outcome, task = entry.outcome, entry.outcome.task
        argv, stdout_path = task.steps[entry.step]
        if stdout_path and status == 0:
            os.replace(stdout_path + ".partial", stdout_path)
            if not task.log:
                with open(stdout_path) as f:
                    print(f.read(), end="", file=self.out, flush=True)
        outcome.seconds = time.time() - outcome.started
        if status == 0 and entry.step + 1 < len(task.steps) and not self.stopping:
            self.start(entry.slot, outcome, entry.step + 1)
            return
        if status == 0 and entry.step + 1 == len(task.steps):
            outcome.status = FINISHED
            self.say(f"finish {self.number(outcome)} {task.name} in {outcome.seconds:.0f} s")
        elif self.stopping:
            done = task.finished_anyway is not None and task.finished_anyway()
            outcome.status = FINISHED if done else INTERRUPTED
            self.say(f"{'finish' if done else 'stopped'} {self.number(outcome)} {task.name} "
                     f"({describe_status(status)})")
        else:
            outcome.status, outcome.exit_status = FAILED, status
            outcome.error = last_line(task.log, entry.log_start)
            where = f"; log {task.log}" if task.log else ""
            self.say(f"FAILED {self.number(outcome)} {task.name} ({describe_status(status)}) after "
                     f"{outcome.seconds:.0f} s{': ' + outcome.error if outcome.error else ''}{where}")
            if self.fail_fast:
                self.stop_all(signal.SIGINT, "--fail-fast: stopping the other runs (they save their checkpoints)")

    # -- signals ---------------------------------------------------------------------------------

    def stop_all(self, number: int, message: str) -> None:
        """--fail-fast: send `number` to every running command; start nothing more."""
        self.stopping = True
        if self.running:
            self.say(message)
        for entry in self.running:
            if entry.process.poll() is None:
                entry.process.send_signal(number)

    def on_signal(self, number: int, frame) -> None:
        """The runner's handler: forward at once, report later (printing here could re-enter a
        print the main code was in)."""
        self.signals.append(number)
        self.stopping = True
        for entry in self.running:
            self.forward_signals(entry)

    def forward_signals(self, entry: Running) -> None:
        """Send `entry` the runner's signals it has not had: the first as received (train.py saves
        and stops), the second too (train.py stops at once, without saving), then SIGKILL."""
        while entry.signals_sent < len(self.signals):
            number = self.signals[entry.signals_sent] if entry.signals_sent < 2 else signal.SIGKILL
            entry.signals_sent += 1
            if entry.process.poll() is None:
                entry.process.send_signal(number)

    def announce_signals(self) -> None:
        messages = {0: "stopping the runs (they save their checkpoints); a second Ctrl-C stops them without "
                       "saving", 1: "the runs stop now, without saving the current epoch"}
        while self.announced < len(self.signals):
            self.say(f"signal {self.signals[self.announced]}: "
                     f"{messages.get(self.announced, 'killing the runs (SIGKILL)')}")
            self.announced += 1

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> list[Outcome]:
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = {}
        if in_main_thread:
            for number in (signal.SIGINT, signal.SIGTERM):
                previous[number] = signal.signal(number, self.on_signal)
        try:
            self.loop()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        return self.outcomes

    def loop(self) -> None:
        queue = deque(self.outcomes)
        free = deque(self.slots)
        while True:
            while free and queue and not self.stopping:
                self.start(free.popleft(), queue.popleft(), 0)
            if not self.running:
                return
            time.sleep(self.poll_seconds)
            self.announce_signals()
            for entry in list(self.running):
                status = entry.process.poll()
                if status is not None:
                    self.end(entry, status)
                    if not any(r.slot is entry.slot for r in self.running):
                        free.append(entry.slot)


def run_tasks(tasks: list[Task], slots: list[Slot], fail_fast: bool = False, out=None) -> tuple[list[Outcome], int]:
    """Run the tasks; returns the outcomes and the exit status: 0 when every task finished,
    128 + the signal number when stopped by a signal, 1 otherwise."""
    pool = Pool(tasks, slots, fail_fast, out)
    outcomes = pool.run()
    if pool.signals:
        return outcomes, 128 + pool.signals[0]
    return outcomes, 0 if all(o.status == FINISHED for o in outcomes) else 1


# The table runner's planner skips finished runs and gives train.py --resume auto (tools/paper_tables.py).
RERUN_PLANNED = "Run the same command again: finished runs are skipped, the others resume or start."


def summary(outcomes: list[Outcome], done_before: int = 0, rerun: str = RERUN_PLANNED) -> list[str]:
    """The closing lines: counts, then each failed run with its error and log, then what is left and
    `rerun`, how to go on."""
    count = {status: sum(o.status == status for o in outcomes) for status in (FINISHED, FAILED, INTERRUPTED,
                                                                              NOT_STARTED)}
    left = count[INTERRUPTED] + count[NOT_STARTED]
    lines = [f"summary: {count[FINISHED]} finished, {count[FAILED]} failed, {left} left "
             f"({count[INTERRUPTED]} interrupted, {count[NOT_STARTED]} not started)"
             + (f"; {done_before} were done already" if done_before else "")]
    for o in outcomes:
        if o.status == FAILED:
            log = o.task.log or "the output above"
            error = f": {o.error}" if o.error else ""
            lines.append(f"  failed: {o.task.name} ({describe_status(o.exit_status)}){error}; see {log}")
    for o in outcomes:
        if o.status in (INTERRUPTED, NOT_STARTED):
            lines.append(f"  left ({o.status}): {o.task.name}")
    if count[FAILED] or left:
        lines.append(rerun)
    return lines


# ---------------------------------------------------------------------------------------------
# Command line: a file of commands


def read_commands(path: str) -> list[list[str]]:
    """[(line number, argv)] of the file's non-empty, non-comment lines."""
    if not os.path.isfile(path):
        raise UserError(f"commands file not found: {path}")
    commands = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    commands.append((number, shlex.split(line)))
                except ValueError as error:
                    raise UserError(f"{path}:{number}: {error} (one command per line, quoted as in a shell)")
    return commands


def rerun_lines(path: str, numbers: list[int], outcomes: list[Outcome]) -> str:
    """How to go on after a commands file: the pool keeps no record of a raw command's run."""
    left = [str(number) for number, o in zip(numbers, outcomes) if o.status != FINISHED]
    return (f"Running {path} again reruns every line, finished ones too: to go on, run only its "
            f"line{'s' if len(left) > 1 else ''} {', '.join(left)} (train.py continues a run only with --resume auto).")


def command_task(path: str, number: int, argv: list[str]) -> Task:
    output_dir = next((a.split("=", 1)[1] for a in argv if a.startswith("output_dir=")), None)
    if output_dir:
        return Task(output_dir, [(argv, None)], output_dir.rstrip("/") + ".log")
    return Task(f"{path}:{number}", [(argv, None)], f"{path}.line{number}.log")


@reports_user_errors
def main(argv=None) -> int:
    parser = CommandLine(__doc__)
    parser.add_argument("commands", help="a file with one command per line")
    parser.add_argument("--gpus", type=gpu_count, default=None, help="GPUs to use (default: every visible one); 0: the CPU")
    parser.add_argument("--jobs-per-gpu", type=jobs_per_device, default=1, metavar="N", help="commands at once per GPU (or CPU)")
    parser.add_argument("--fail-fast", action="store_true", help="stop everything at the first failed command")
    args = parser.parse_args(argv)
    commands = read_commands(args.commands)
    tasks = [command_task(args.commands, number, command) for number, command in commands]
    slots = runner_slots(args.gpus, args.jobs_per_gpu)
    print(f"{len(tasks)} commands, {describe_slots(slots)}", file=sys.stderr)
    outcomes, status = run_tasks(tasks, slots, args.fail_fast)
    for line in summary(outcomes, rerun=rerun_lines(args.commands, [number for number, _ in commands], outcomes)):
        print(line, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
