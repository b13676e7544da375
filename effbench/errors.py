"""The one exception type users see: a message that says what is wrong and what to do."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, at most ``limit`` characters ("" when it has none):
    what a record's ``error`` or a one-line message quotes of a library's exception."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else ""


class EffbenchError(Exception):
    """An error caused by input or environment, shown to the user as one line (no traceback)."""

    exit_code = 2  # what the CLI exits with: 2 for input errors, as click does for usage errors


class NoAnswer(EffbenchError):
    """The inputs were fine but give no answer (no plan option meets the limits): exit 1, so scripts notice."""

    exit_code = 1


class ConfigError(EffbenchError):
    """A malformed sweep file or option."""


class UnsupportedError(EffbenchError):
    """A scheme, device or sensor that this machine or backend cannot provide."""


class OutOfMemory(EffbenchError):
    """A configuration did not fit in host or device memory."""
