"""qmodel: a property-based and model-checking test harness for message queues on Cloudflare
Workers and Workers KV."""

from qmodel.errors import ChoiceError, InvalidTarget, QmodelError, StepLimitExceeded, TraceMismatch

__version__ = "0.1.0"

__all__ = [
    "ChoiceError",
    "InvalidTarget",
    "QmodelError",
    "StepLimitExceeded",
    "TraceMismatch",
    "__version__",
]
