"""The one exception type whose message is meant for a person, not a developer."""


class UserFacingError(Exception):
    """A problem the user can fix: bad input, a missing file, no network.

    Command-line entry points print ``str(error)`` as a single line and exit non-zero
    instead of showing a traceback, so the message must say what went wrong *and* what to
    do about it.
    """
