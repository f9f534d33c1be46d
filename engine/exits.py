"""How an entry point ends: a UserError as one line and exit status 2, and under torchrun one line
for the whole job: the rank that holds the error prints it, the ranks that only stopped with it end
silently with its status, and each leaves torchrun's summary one line instead of a traceback."""

import argparse
import json
import os
import signal
import sys
import time
from typing import Optional

from core.errors import UserError
from engine.distributed import group_started


class CommandLine(argparse.ArgumentParser):
    """An entry point's parser. A bad option is a UserError (one line, exit 2, printed once under
    torchrun: `reports_user_errors`) instead of argparse's usage block on every rank, and an option
    is taken only as spelled out: `--o` must not mean `--overwrite` and delete a run."""

    def __init__(self, description: str, **kwargs):
        super().__init__(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                         allow_abbrev=False, **kwargs)

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message} ({self.prog} --help lists the options)")


class PeerStopped(Exception):
    """Under torchrun: another rank failed, and this one stops with it. `failure` is that rank's
    failure_record (engine/distributed.py: rank, status, message) when it told the others; this
    rank then ends with its status, and prints nothing (that rank printed its error)."""

    def __init__(self, failure: Optional[dict] = None, detail: str = ""):
        self.failure = failure
        if failure:
            text = f"stopped because rank {failure['rank']} failed ({failure['message']})"
        else:
            text = "stopped because another rank failed" + (f" ({detail})" if detail else "")
        super().__init__(text)

    @property
    def status(self) -> int:
        return self.failure["status"] if self.failure else 1


# What gloo and NCCL say when a peer process is gone mid-collective.
LOST_PEER_MARKERS = ("Connection closed by peer", "Connection reset by peer", "remote worker",
                     "NCCL communicator was aborted", "Broken pipe")


def lost_a_peer(error: BaseException) -> bool:
    return isinstance(error, PeerStopped) or any(marker in str(error) for marker in LOST_PEER_MARKERS)


def under_torchrun() -> bool:
    return "TORCHELASTIC_ERROR_FILE" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ


def finish_ending() -> None:
    """Under torchrun, once this rank knows the job ends: ignore SIGTERM. torchrun's agent sends it
    to the other ranks as soon as one exits, which would cut short this rank's ending (its error
    line, train.log, its exit status); an ending that hangs is killed after the agent's timeout."""
    if under_torchrun():
        try:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        except ValueError:   # not the main thread: the agent may then cut the ending short
            pass


def prints_its_error() -> bool:
    """Under torchrun an error raised before the process group exists (the command line, the config)
    is every local rank's alike: local rank 0 alone prints it. Later ones are agreed on across the
    ranks first (engine/run.py), and the rank that holds one prints it."""
    return not under_torchrun() or group_started() or os.environ.get("LOCAL_RANK", "0") == "0"


def record_for_torchrun(message: str, after: Optional[float] = None) -> None:
    """Write the error file torchrun's summary reads, with `message` as its one line (torchrun's own
    `record` would put this rank's traceback there). `after`: the time the rank this one followed
    told of its failure; torchrun names the earliest file (whole seconds) the root cause, and that
    rank writes its own a moment after telling, hence 2 s later."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    stamp = int(time.time()) if after is None else max(int(time.time()), int(after) + 2)
    try:
        with open(path, "w") as f:
            json.dump({"message": message, "timestamp": stamp}, f)
    except OSError:
        pass   # torchrun then shows the exit status alone


def stopped_with_a_peer(error: BaseException) -> int:
    """A rank that only stopped because another failed: silent when that rank said why (it printed
    its error), else one line; that rank's exit status, or 1."""
    stopped = error if isinstance(error, PeerStopped) else PeerStopped(detail=str(error).splitlines()[0][:200])
    rank = os.environ.get("RANK", "?")
    if stopped.failure is None:
        print(f"rank {rank}: {stopped}; its error is above and in torchrun's summary", file=sys.stderr)
    record_for_torchrun(f"rank {rank} {stopped}", after=(stopped.failure or {}).get("time"))
    return stopped.status


def reports_user_errors(main):
    """Decorate an entry point's `main`: a UserError becomes one line `error: <message>` on stderr
    and exit status 2, with no traceback.

    Under torchrun the entry point runs inside torch.distributed.elastic's `record`, so that an
    unexpected error leaves its traceback in the job's summary; a UserError leaves its one line
    there, and a rank that only lost its peer (gloo: "Connection closed by peer") ends as
    `stopped_with_a_peer` says."""
    import functools

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            if prints_its_error():
                print(f"error: {error}", file=sys.stderr)
            record_for_torchrun(f"UserError: {error}")
            return 2
        except KeyboardInterrupt:      # before a run's own handling (engine/run.py) or outside a run
            print("interrupted", file=sys.stderr)
            return 128 + signal.SIGINT
        except Exception as error:
            if not (under_torchrun() and lost_a_peer(error)):
                raise
            return stopped_with_a_peer(error)

    @functools.wraps(main)
    def entry_point(*args, **kwargs):
        if not under_torchrun():
            return wrapper(*args, **kwargs)
        from torch.distributed.elastic.multiprocessing.errors import record

        return record(wrapper)(*args, **kwargs)
    return entry_point
