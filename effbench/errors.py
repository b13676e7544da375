"""The one exception type users see: a message that says what is wrong and what to do."""


class EffbenchError(Exception):
    """An error caused by input or environment, shown to the user as one line (no traceback)."""


class ConfigError(EffbenchError):
    """A malformed sweep file or option."""


class UnsupportedError(EffbenchError):
    """A scheme, device or sensor that this machine or backend cannot provide."""


class OutOfMemory(EffbenchError):
    """A configuration did not fit in host or device memory."""
