"""The exception tree. The CLI catches `TrainctlError` once and prints its message in one red line.

Every message says what is wrong and, where there is one, what to run instead.
"""


class TrainctlError(Exception):
    """Root of every error trainctl expects and explains to the user."""


class ConfigError(TrainctlError):
    """Settings (trainctl.toml or flags) are invalid; the message lists every problem."""


class HomeError(TrainctlError):
    """A path would leave the home folder, or the home folder is unusable."""


class InputFileError(TrainctlError):
    """An input file cannot be read at all (binary, not UTF-8, empty, no valid record)."""


class JobError(TrainctlError):
    """A job cannot be found, or an illegal job state transition was asked for."""


class TrainingError(TrainctlError):
    """A training job failed (NaN loss, no data left, child crashed)."""


class BenchError(TrainctlError):
    """A benchmark run cannot start or resume as asked."""


class ModelError(TrainctlError):
    """A model cannot be found, fetched or converted."""


class PlacementError(TrainctlError):
    """A job asks for devices, processes or a cluster this machine cannot give it (more GPUs than
    there are, Ray not installed, no free rendezvous port)."""
