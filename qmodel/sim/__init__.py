"""The simulated platform: clock, choices, Workers KV, Durable Objects, scheduler, HTTP records.

Everything a target or an actor touches in a simulated world comes from here, and every
nondeterministic decision goes through one :class:`~qmodel.sim.choices.ChoiceSource`.
"""

from qmodel.sim.choices import (
    Choice,
    ChoiceSource,
    FirstOptionBackend,
    HypothesisBackend,
    RecordedBackend,
    ScriptedBackend,
    SeededBackend,
)
from qmodel.sim.clock import Clock
from qmodel.sim.durable import DurableId, DurableNamespace, DurableState, DurableStorage
from qmodel.sim.http import URL, Headers, Request, Response, json_response
from qmodel.sim.kv import KeyInfo, KvConfig, KvError, KvSnapshot, KvStats, KvStore, ListResult
from qmodel.sim.runtime import Context, Env, Invocation, KvBinding, Platform, check_target
from qmodel.sim.scheduler import (
    Scheduler,
    Step,
    Task,
    TaskCancelled,
    date_now,
    sleep,
    unique_suffix,
)

__all__ = [
    "URL",
    "Choice",
    "ChoiceSource",
    "Clock",
    "Context",
    "DurableId",
    "DurableNamespace",
    "DurableState",
    "DurableStorage",
    "Env",
    "FirstOptionBackend",
    "Headers",
    "HypothesisBackend",
    "Invocation",
    "KeyInfo",
    "KvBinding",
    "KvConfig",
    "KvError",
    "KvSnapshot",
    "KvStats",
    "KvStore",
    "ListResult",
    "Platform",
    "RecordedBackend",
    "Request",
    "Response",
    "Scheduler",
    "ScriptedBackend",
    "SeededBackend",
    "Step",
    "Task",
    "TaskCancelled",
    "check_target",
    "date_now",
    "json_response",
    "sleep",
    "unique_suffix",
]
