"""How an entry point ends: a UserError as one line and exit status 2, and under torchrun an error
file that names the failing rank, while a rank that only lost its peer says so in one line."""

import os
import sys

from core.errors import UserError


class PeerStopped(Exception):
    """Under torchrun: another rank failed, and this one stops with it (that rank reports why)."""


# What gloo and NCCL say when a peer process is gone mid-collective.
LOST_PEER_MARKERS = ("Connection closed by peer", "Connection reset by peer", "remote worker",
                     "NCCL communicator was aborted", "Broken pipe")


def lost_a_peer(error: BaseException) -> bool:
    return isinstance(error, PeerStopped) or any(marker in str(error) for marker in LOST_PEER_MARKERS)


def under_torchrun() -> bool:
    return "TORCHELASTIC_ERROR_FILE" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ


def record_for_torchrun(error: BaseException) -> None:
    """Write the error file torchrun's summary reads (what `record` does for an uncaught
    exception), so that the summary names this rank and its message."""
    if "TORCHELASTIC_ERROR_FILE" in os.environ:
        from torch.distributed.elastic.multiprocessing.errors import get_error_handler

        get_error_handler().record_exception(error)


def reports_user_errors(main):
    """Decorate an entry point's `main`: a UserError becomes one line `error: <message>` on stderr
    and exit status 2, with no traceback.

    Under torchrun the entry point runs inside torch.distributed.elastic's `record`, so the job's
    summary names the rank that failed first and its message; a rank that only lost its peer (gloo:
    "Connection closed by peer") says so in one line and exits 1 without a traceback or an error
    file of its own."""
    import functools

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            record_for_torchrun(error)
            return 2
        except Exception as error:
            if not (under_torchrun() and lost_a_peer(error)):
                raise
            print(f"rank {os.environ.get('RANK', '?')}: stopped because another rank failed; its error is "
                  f"above and in torchrun's summary", file=sys.stderr)
            return 1

    @functools.wraps(main)
    def entry_point(*args, **kwargs):
        if not under_torchrun():
            return wrapper(*args, **kwargs)
        from torch.distributed.elastic.multiprocessing.errors import record

        return record(wrapper)(*args, **kwargs)
    return entry_point
