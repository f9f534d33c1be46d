"""The one exception type for mistakes a user can fix (config, data, checkpoint).

Entry points catch it and print its message on one line, with exit status 2 and no traceback.
"""


class UserError(Exception):
    """A problem in the user's input; the message names the thing and how to fix it."""
