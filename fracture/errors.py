"""User-facing errors.

Every problem a user can fix (a wrong path, a bad config value, a missing weights file) is raised as a
subclass of `FractureError` with a message that says what to do. The command-line entry points print that
message as one line on stderr and exit with code 2 (`user_errors`); library users can catch `FractureError`.
"""

import contextlib
import sys


class FractureError(Exception):
    """Base class for errors that the user can act on."""


class DataError(FractureError):
    """The dataset folder is missing, malformed or empty."""


class ConfigError(FractureError):
    """A configuration value is invalid."""


class WeightsError(FractureError):
    """Pretrained weights could not be obtained."""


class CheckpointError(FractureError):
    """A checkpoint file is missing or is not a fracture model."""


class ExportError(FractureError):
    """An export that cannot be made here, or an artifact that does not match its checkpoint."""


@contextlib.contextmanager
def user_errors():
    """Print a `FractureError` as `error: <message>` and exit with code 2; let real bugs show their traceback."""
    try:
        yield
    except FractureError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
