"""Exceptions that end a command with a one-line message and exit code 3."""


class DoctorError(Exception):
    """An expected failure: the message is shown as is, without a traceback."""


class InputError(DoctorError):
    """Invalid input: a snapshot, configuration or unit file. The message names file and line."""


class ConfigError(DoctorError):
    """One or more configuration errors; `errors` contains one `file:line: message` each."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))
