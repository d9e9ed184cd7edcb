"""User-facing errors.

Every mistake a user can make (a bad path, a corrupt checkpoint, an unknown dataset, a class with one
sample, NaN features, ...) raises :class:`NcprobeError` with a one-line message that names the
problem and the fix. The CLI prints it as ``error: <message>`` and exits with code 2, no traceback.
Anything else that escapes is a bug in ncprobe and keeps its traceback.
"""

from __future__ import annotations


class NcprobeError(Exception):
    """A problem with the user's input, reported as one line; the CLI exits with code 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class CheckpointError(NcprobeError):
    """The checkpoint file cannot be read, is refused, or matches no architecture."""


class DatasetError(NcprobeError):
    """The dataset spec is unknown, the files are missing, or the data are malformed."""


class ScoringError(NcprobeError):
    """Features or labels cannot be scored as asked (empty set, NaN rows, one-sample class, ...)."""


class ParameterError(NcprobeError):
    """A job parameter is missing, out of range, or conflicts with another.

    The message names parameters as ``{name}`` (the Python parameter): ``str(err)`` shows the
    Python names (``fit_split``), ``err.render(to_flag)`` shows whatever ``to_flag(name)`` gives,
    which the CLI uses to speak of its flags (``--fit-split``). Core code never mentions flags.
    """

    def __init__(self, template: str):
        self.template = " ".join(str(template).split())
        super().__init__(self.render())

    def render(self, to_name=None) -> str:
        """The message with every ``{name}`` replaced by ``to_name(name)`` (default: the name itself)."""
        convert = to_name or (lambda name: name)

        class _Names(dict):
            def __missing__(self, key):
                return convert(key)

        return self.template.format_map(_Names())
