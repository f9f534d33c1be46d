"""The one exception type for mistakes a user can fix (config, data, checkpoint).

Entry points catch it and print its message on one line, with exit status 2 and no traceback
(engine/exits.py). This module is on the ground floor: it imports nothing of the project.
"""

WORKER_PREFIX = "Caught UserError in DataLoader worker"


class UserError(Exception):
    """A problem in the user's input; the message names the thing and how to fix it.

    A UserError raised in a DataLoader worker (a missing image, say) is re-raised in the main
    process by torch as UserError("Caught UserError in DataLoader worker process N.\\nOriginal
    Traceback ...\\ncore.errors.UserError: <message>\\n"); the message is taken back out of it,
    so the entry points still print one line.
    """

    def __init__(self, message: str = ""):
        super().__init__(original_message(message))


def original_message(message) -> str:
    """The worker's own message out of torch's re-raised text; any other message unchanged."""
    text = str(message)
    if not text.startswith(WORKER_PREFIX):
        return text
    marker = "UserError: "
    start = text.rfind("\n" + "core.errors." + marker)
    start = text.rfind("\n" + marker) if start < 0 else start
    if start < 0:
        return text
    return text[text.index(marker, start) + len(marker):].strip()
