"""A run folder has one owner: the run that holds its lock.

The rules (README "Run folders"):

- A fresh run (no `--resume`) into a folder that already holds run files stops before touching it,
  saying what is there and the three ways on: `--resume auto` (continue that run), another
  `output_dir`, or `--overwrite` (the convention of Hugging Face's Trainer: replace that run).
- A run holds an exclusive `fcntl.flock` on `<output_dir>/.lock` for its whole life (rank 0 under
  torchrun). The OS releases it when the process ends, however it ends, so a killed run never
  blocks its own resume; a second run into a held folder is refused with the holder's PID.
- Nothing is written into the folder (not even config.yaml or the lock file) before the config,
  the data and the model are built and checked: `claim` is called only then.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import logging
import os
import re
from typing import Callable, Optional

import yaml

from core import LOGGER_NAME
from core.errors import UserError
from engine.runtime import log_to_file

log = logging.getLogger(LOGGER_NAME)

LOCK_NAME = ".lock"
THRESHOLD_CHECKPOINT = "threshold.pt"   # an RSG run's checkpoint at T_th, the branch point (engine/branch.py)
BRANCH_FILE = "branch.json"             # a branch's record of its parent (engine/branch.py)
METRICS_FILE = "metrics.jsonl"          # one JSON line per finished epoch (append_record, read_records)
TEST_TABLE = "eval_test.txt"            # eval.py's printed table, saved by the table runner (tools/paper_tables.py)
TENSORBOARD = "tensorboard"             # the folder of the run's TensorBoard event files
# Every file a run writes into its folder: what --overwrite removes and what makes a folder hold a
# run. One list, because a file left out here outlives the run it belongs to (a threshold.pt kept
# by --overwrite would give a later branch the old run's weights). A file under one of these names
# is the run's only when its content says so (`written_by_a_run`): a user's config.yaml or best.pt
# in the folder is never removed nor written over.
RUN_FILES = ("config.yaml", "last.pt", "best.pt", THRESHOLD_CHECKPOINT, BRANCH_FILE, METRICS_FILE, "train.log",
             TENSORBOARD, TEST_TABLE)
# And the files named after them: eval.py's per-class CSVs, JSON reports and post-hoc JSONs beside
# the checkpoints (a report left from a replaced run would pass for the new run's in the
# collector), and the <name>.tmp.<pid> that an atomic write killed mid-way leaves.
RUN_FILE_PATTERNS = ("*.per_class.csv", "*.report.json", "*.posthoc.json", "*.tmp.[0-9]*")
# The per-class CSV's columns: eval.py writes them, and they tell its files from the user's.
CSV_HEADER = ("class", "name", "train_count", "shot_group", "test_images", "accuracy")


def run_files(folder: str) -> list[str]:
    """The files of `folder` that a run wrote (names): in RUN_FILES order, then the patterns' files,
    then the per-class CSVs that eval.py wrote under a name of the user's beside their reports.
    Each is known by its content, not its name alone (`written_by_a_run`)."""
    present = [name for name in RUN_FILES if written_by_a_run(os.path.join(folder, name))]
    named = sorted(os.path.basename(p) for pattern in RUN_FILE_PATTERNS for p in glob.glob(os.path.join(folder, pattern))
                   if written_by_a_run(p))
    return present + named + evaluation_csvs_beside_reports(folder, named)


def foreign_files(folder: str) -> list[str]:
    """The names a run writes that something else holds in `folder`: a file no run wrote (the user's
    config.yaml, best.pt, ...) or a link, which would lead the run's writes out of the folder. A run
    neither removes nor writes over them (a TensorBoard folder of the user's is shared: the run adds
    its event files beside theirs)."""
    foreign = []
    for name in RUN_FILES:
        path = os.path.join(folder, name)
        if not os.path.lexists(path) or written_by_a_run(path):
            continue
        if name == TENSORBOARD and os.path.isdir(path) and not os.path.islink(path):
            continue
        foreign.append(name)
    return foreign


EVENT_FILE = "events.out.tfevents."
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d ")         # train.log: every line starts with the time (runtime.LOG_FORMAT)
TEMPORARY = re.compile(r"^(?P<name>.+)\.tmp(\.\d+)?$")   # an atomic write's file, left by a kill mid-way


def written_by_a_run(path: str) -> bool:
    """Whether the file at `path` is one a run (or eval.py) wrote, by its content: a checkpoint of
    this codebase, a resolved config, metrics records, a log of timed lines, a branch record,
    eval.py's outputs, TensorBoard's event files. A link never is: nothing of a run leaves its folder."""
    if os.path.islink(path) or not os.path.exists(path):
        return False
    name = os.path.basename(path)
    temporary = TEMPORARY.match(name)
    if temporary:
        return temporary.group("name") in RUN_FILES and os.path.isfile(path)
    if name == TENSORBOARD:
        return bool(event_files(path))
    if not os.path.isfile(path):
        return False
    if name.endswith(".pt"):
        return is_own_checkpoint(path)
    readers = {"config.yaml": looks_like_config, BRANCH_FILE: looks_like_branch_record, METRICS_FILE: looks_like_metrics,
               "train.log": looks_like_train_log, TEST_TABLE: looks_like_evaluation_table}
    if name in readers:
        return readers[name](path)
    return written_by_eval(path)


def first_line(path: str) -> Optional[str]:
    """The file's first line ('' for an empty file), or None when it is not text."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline()
    except (OSError, UnicodeDecodeError):
        return None


def looks_like_metrics(path: str) -> bool:
    line = first_line(path)
    return line == "" or (line is not None and parse_record(line) is not None)


def looks_like_train_log(path: str) -> bool:
    line = first_line(path)
    return line == "" or (line is not None and bool(LOG_LINE.match(line)))


def looks_like_evaluation_table(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return "(the measure of Tables 1-7)" in f.read(1 << 16)
    except (OSError, UnicodeDecodeError):
        return False


def looks_like_config(path: str) -> bool:
    """A resolved config: a mapping with the sections and keys train.py writes."""
    try:
        with open(path, encoding="utf-8") as f:
            content = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(content, dict) and {"data", "model", "train", "output_dir", "name"} <= set(content)


def looks_like_branch_record(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(content, dict) and {"sha256", "epoch"} <= set(content)


def is_own_checkpoint(path: str) -> bool:
    """A checkpoint of this codebase (its format key), read with its tensors mapped, not loaded."""
    from engine.checkpoint import load_checkpoint      # torch: only for a folder that has a .pt file

    try:
        load_checkpoint(path, mmap=True)
    except UserError:
        return False
    return True


def event_files(folder: str) -> list[str]:
    """TensorBoard's event files under `folder` (paths), links neither followed nor counted."""
    found = []
    for root, subfolders, files in os.walk(folder):
        subfolders[:] = [d for d in subfolders if not os.path.islink(os.path.join(root, d))]
        found += [os.path.join(root, f) for f in files
                  if f.startswith(EVENT_FILE) and not os.path.islink(os.path.join(root, f))]
    return found


def evaluation_csvs_beside_reports(folder: str, names: list[str]) -> list[str]:
    """eval.py --output RUN/X.csv (or RUN/X) writes X.report.json beside it, so the CSV's name
    matches no pattern: it is the report's when it starts with eval.py's CSV header."""
    found = []
    for report in names:
        stem = report.removesuffix(".report.json")
        if stem == report:
            continue
        for name in (stem + ".csv", stem):
            path = os.path.join(folder, name)
            if name not in names and name not in found and os.path.isfile(path) and written_by_eval(path):
                found.append(name)
    return found


def written_by_eval(path: str) -> bool:
    """Whether `path` is a file of eval.py's: a per-class CSV (its header) or a JSON report or tau
    JSON (their keys). Those alone it replaces: --output RUN/last.pt must not turn a checkpoint
    into a CSV, nor a default name a file of the user's; and --overwrite removes them with the run."""
    header = ",".join(CSV_HEADER).encode()
    try:
        with open(path, "rb") as f:
            start = f.read(len(header))
            if start == header:
                return True
            if not start.lstrip().startswith(b"{"):       # a checkpoint (a zip), a YAML, a log...
                return False
            content = json.loads(start + f.read())
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and ("per_class" in content or "by_tau" in content)


def folder_state(folder: str) -> tuple:
    """(name, size, mtime) of each file under a run file's name or pattern: what the run saw when it
    checked the folder. By name alone: whoever wrote them, a change between the check and the
    claim is what matters, and no checkpoint needs reading for it."""
    names = list(RUN_FILES) + [os.path.basename(p) for pattern in RUN_FILE_PATTERNS
                               for p in glob.glob(os.path.join(folder, pattern))]
    names += evaluation_csvs_beside_reports(folder, names)
    state = []
    for name in sorted(set(names)):
        path = os.path.join(folder, name)
        if os.path.lexists(path):
            stats = os.lstat(path)
            state.append((name, stats.st_size, stats.st_mtime_ns))
    return tuple(state)


def check_unchanged(folder: str, seen: tuple) -> None:
    """Under the lock: the folder is as it was when checked. Another run may have taken it and
    finished while this one was being built (two runs started at once); then this one stops."""
    if folder_state(folder) != seen:
        raise UserError(f"output_dir {folder} was written by another run while this one was being prepared; "
                        f"this run changed nothing there. Start it again (--resume auto continues that run), "
                        f"or train into another folder with output_dir=<path>")


def finished_after(last_epoch: Optional[int], epochs: int) -> bool:
    """A run of `epochs` epochs is finished once metrics.jsonl holds its last epoch."""
    return last_epoch is not None and last_epoch + 1 >= epochs


def run_finished(folder: str, epochs: int) -> bool:
    return finished_after(last_finished_epoch(folder), epochs)


def last_finished_epoch(folder: str) -> Optional[int]:
    """The epoch of the last record of metrics.jsonl (one line per finished epoch), or None."""
    records = metrics_records(folder)
    return records[-1]["epoch"] if records else None


# ---------------------------------------------------------------------------------------------
# metrics.jsonl: one line per finished epoch, each written whole; every reader goes through
# read_records, which skips a line that is not a whole record.


def append_record(path: str, record: dict) -> None:
    """Append one epoch's line in a single unbuffered write: a crash cuts at most this line, and
    `drop_torn_tail` removes its torn end before the resumed run appends the next."""
    line = (json.dumps(record) + "\n").encode()
    with open(path, "ab", buffering=0) as f:
        if f.write(line) != len(line):      # a full disk mid-line: dropped on resume like a crash's
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def read_records(path: str) -> tuple[list[dict], list[int]]:
    """The records of a metrics.jsonl in order, and the numbers of its lines that are not one (cut
    short by a crash, or a cut line that an older resume appended the next record to)."""
    records, unreadable = [], []
    with open(path, errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = parse_record(line)
            if record is None:
                unreadable.append(number)
            else:
                records.append(record)
    return records, unreadable


def parse_record(line: str) -> Optional[dict]:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("epoch"), int) else None


def metrics_records(folder: str) -> list[dict]:
    """The readable records of the folder's metrics.jsonl; [] when it has none."""
    path = os.path.join(folder, METRICS_FILE)
    return read_records(path)[0] if os.path.isfile(path) else []


def drop_torn_tail(folder: str) -> int:
    """Cut the folder's metrics.jsonl back to its last whole line; returns the bytes dropped. Every
    record ends with its newline, so bytes after the last one are a line a crash cut short: the
    next record appended to them would make that epoch's line unreadable too."""
    path = os.path.join(folder, METRICS_FILE)
    if not os.path.isfile(path):
        return 0
    with open(path, "rb+") as f:
        content = f.read()
        whole = content.rfind(b"\n") + 1
        f.truncate(whole)
    return len(content) - whole


def describe_run(folder: str) -> str:
    """'config quickstart, 30 epochs configured, last finished epoch 29' from the folder's files."""
    parts = []
    try:
        with open(os.path.join(folder, "config.yaml")) as f:
            stored = yaml.safe_load(f) or {}
        parts.append(f"config {stored.get('name') or '?'}, {stored.get('train', {}).get('epochs', '?')} "
                     f"epochs configured")
    except (OSError, yaml.YAMLError, AttributeError):
        parts.append("no readable config.yaml")
    epoch = last_finished_epoch(folder)
    parts.append("no finished epoch" if epoch is None else f"last finished epoch {epoch}")
    return ", ".join(parts)


def same_folder(first: str, second: str) -> bool:
    """Whether two paths name one folder (or one file: eval.py's outputs): the same inode once both exist (whatever symlinks, `..` or
    mounts spell them), else the same real path (a folder not made yet). Every check of a run
    folder's identity goes through here: a path compared as text lets a run delete the folder it
    reads from."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return os.path.realpath(first) == os.path.realpath(second)


def continues_this_folder(resume: Optional[str], folder: str) -> bool:
    """`--resume auto`, or a checkpoint inside the folder: the run carries on the folder's run."""
    if resume == "auto":
        return True
    if not resume:
        return False
    return same_folder(os.path.dirname(os.path.abspath(resume)), folder)


def check_ownership(folder: str, resume: Optional[str], overwrite: bool) -> None:
    """Refuse, before anything is built or written, a fresh run into a folder holding another run."""
    if overwrite and resume:
        raise UserError("--overwrite replaces the run in output_dir and --resume continues it; give one of them")
    if resume and not continues_this_folder(resume, folder):
        source = os.path.dirname(os.path.abspath(resume))
        raise UserError(f"--resume {resume} is a checkpoint of the run in {source}, not of output_dir {folder}: "
                        f"nothing was changed. Continue that run with output_dir={source}, or start a new run in "
                        f"{folder} from it with --branch-from {resume}")
    foreign = foreign_files(folder) if os.path.isdir(folder) and not resume else []
    if foreign:     # a new run's files would replace them (a resumed run's folder is its own already)
        raise UserError(f"output_dir {folder} holds {', '.join(foreign)}, which no run of this project wrote (or "
                        f"a link out of the folder); a run never removes nor writes over such files, so nothing "
                        f"was changed. Move them elsewhere, or train into another folder with output_dir=<path>")
    if overwrite:
        return
    if resume == "auto" and not os.path.isfile(os.path.join(folder, "last.pt")):
        done = last_finished_epoch(folder)
        if done is not None:   # starting from scratch would append epochs 0.. to that run's metrics
            raise UserError(f"output_dir {folder} holds a run whose metrics.jsonl goes to epoch {done}, but no "
                            f"last.pt to continue it from; nothing was changed. Replace that run with "
                            f"--overwrite, or train into another folder with output_dir=<path>")
    if continues_this_folder(resume, folder):
        return
    present = run_files(folder) if os.path.isdir(folder) else []
    if present:
        raise UserError(f"output_dir {folder} holds a run already ({describe_run(folder)}; files: "
                        f"{', '.join(present)}); nothing was changed. Continue that run with --resume auto, "
                        f"train into another folder with output_dir=<path>, or replace it with --overwrite")


def process_alive(pid: int) -> bool:
    """Whether a process with this PID exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # it exists, under another user
        return True
    return True


class RunFolderLock:
    """An exclusive flock on <folder>/.lock, held until `release` or the end of the process."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self.fd: Optional[int] = None
        self.seen: tuple = ()           # folder_state when the folder was checked
        self.claimed = False            # whether `acquire` has written into the folder

    def check_free(self) -> None:
        """Take the lock if its file exists already (opening it read-only writes nothing); a
        held lock is refused now, before the run builds anything."""
        if self.fd is None and os.path.isfile(self.path):
            self._take(os.open(self.path, os.O_RDONLY))

    def acquire(self) -> None:
        """Take the lock, creating the folder and the lock file, and write this process's PID."""
        if self.fd is None:
            os.makedirs(self.folder, exist_ok=True)
            self._take(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644))
        self.claimed = True
        with open(self.path, "w") as f:   # the PID is for the refusal message only; the flock decides
            f.write(f"{os.getpid()}\n")

    def _take(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"output_dir {self.folder} is in use by {self.describe_holder()}; wait for it "
                            f"to end, stop it, or train into another folder with output_dir=<path>") from None
        self.fd = fd

    def describe_holder(self) -> str:
        """Who holds the lock, for the refusal. The PID in the lock file is the last run that
        claimed the folder; while another train.py only checks the folder (or has not written its
        PID yet), the file still names an earlier run, perhaps one that has ended."""
        pid = self.holder()
        if pid.isdigit() and process_alive(int(pid)):
            return f"another run (PID {pid})"
        return "another train.py checking or starting in it (the lock file names no live process)"

    def holder(self) -> str:
        try:
            with open(self.path) as f:
                return f.read().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)      # closing the descriptor releases the flock
            self.fd = None


def claim(folder: str, lock: RunFolderLock, overwrite: bool, write_first_files: Callable[[], None]) -> None:
    """Rank 0 takes the folder, once the run is built: the lock, then (with --overwrite) the old run's
    files go, then the log goes into train.log too, then `write_first_files` (config.yaml, a branch's
    record of its source). A folder that cannot be written to is one UserError."""
    try:
        lock.acquire()
        check_unchanged(folder, lock.seen)   # now that the folder is held: as it was checked
        removed = remove_run_files(folder) if overwrite else []
        log_to_file(folder)
        if removed:
            log.info("--overwrite: removed the previous run's %s from %s", ", ".join(removed), folder)
        if drop_torn_tail(folder):
            log.warning("%s ended in a line cut short by a crash: dropped, so that the next record starts a line "
                        "of its own", os.path.join(folder, METRICS_FILE))
        write_first_files()
    except OSError as error:
        raise UserError(f"cannot write into output_dir {folder}: {error.strerror or error} "
                        f"({error.filename or folder}); fix its permissions or choose another "
                        f"output_dir=<path>") from None


def remove_run_files(folder: str) -> list[str]:
    """--overwrite: delete the previous run's files, known by their content (`written_by_a_run`); in
    its TensorBoard folder only the event files, and the folders they leave empty. Anything else in
    the folder stays, and no link is followed."""
    removed = run_files(folder)
    for name in removed:
        path = os.path.join(folder, name)
        if name == TENSORBOARD:
            remove_event_files(path)
        else:
            os.remove(path)
    return removed


def remove_event_files(folder: str) -> None:
    for path in event_files(folder):
        os.remove(path)
    for root, subfolders, _ in sorted(os.walk(folder), key=lambda entry: -entry[0].count(os.sep)):
        if not os.listdir(root) and not os.path.islink(root):
            os.rmdir(root)


def training_counts(folder: str) -> Optional[list]:
    """The training class counts of a finished run: from eval.py's report of its last.pt (what
    scripts/export_results.py keeps in results/, where no checkpoint is), else from a checkpoint;
    None when the folder has neither."""
    report = os.path.join(folder, "last.report.json")
    if os.path.isfile(report):
        with open(report) as f:
            return list(json.load(f)["train_counts"])
    from engine.checkpoint import load_checkpoint      # torch: only for a folder with checkpoints

    for name in ("last.pt", "threshold.pt", "best.pt"):
        if os.path.isfile(os.path.join(folder, name)):
            return list(load_checkpoint(os.path.join(folder, name))["class_counts"])
    return None
