"""Exception types whose messages are meant to be read by a person, on one line.

The CLI catches ``CrossmodalError`` and prints ``error: <message>`` without a
traceback, so every message must name the file, key or module at fault and
what was expected.
"""


class CrossmodalError(Exception):
    """Base class: an error caused by the user's input, not by a bug."""


class ConfigError(CrossmodalError, ValueError):
    """A configuration key, type or registry name is wrong."""


class DataError(CrossmodalError, ValueError):
    """A dataset file or folder is missing, corrupt or inconsistent."""


class EmptyHandError(DataError):
    """A frame has no hand pixels in its mask; callers skip and count it."""
