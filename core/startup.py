"""How an entry point starts. Loading torch and the project takes seconds; a Ctrl-C in that time
ends the process with one line instead of a traceback through the imports (nothing has been read
or written yet). Once `main` runs, its own handling takes over (engine/exits.py)."""

import contextlib
import os
import signal
import sys


@contextlib.contextmanager
def interrupt_quietly(command: str):
    """Around an entry point's imports: SIGINT prints one line and exits with 128 + its number."""
    def stop(signal_number, frame):
        sys.stderr.write(f"{command}: interrupted while starting; nothing was read or written\n")
        sys.stderr.flush()
        os._exit(128 + signal_number)     # no unwinding through half-imported modules

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
