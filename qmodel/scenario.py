"""Scripted scenarios: a schedule written by hand, for showing a mechanism step by step.

A :class:`Scenario` sends named requests to a target and steps them in the order the script
says; every step it takes is recorded in the world's choice log exactly as if the scheduler had
chosen it, so the script *is* a recorded list of choices. KV decisions come from a
:class:`~qmodel.sim.choices.ScriptedBackend` (only the surprising ones need saying, by label).

A step of a named request also steps the requests it waits on (its Durable Object calls), so a
script reads at the level of the worker: ``run_until("claim-1", "put comment:")`` runs that
request until its next operation is a put of a message key. Against a design that never does
that operation the request simply runs to its end, so one script applies to every design.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from qmodel.errors import QmodelError
from qmodel.sim.choices import ScriptedBackend
from qmodel.sim.http import Request, Response
from qmodel.sim.kv import KvConfig
from qmodel.sim.runtime import Invocation, Platform
from qmodel.sim.scheduler import Task

__all__ = ["Scenario"]


@attrs.define(eq=False)
class Scenario:
    """A world with one target, driven by hand."""

    target: Any
    platform: Platform
    tasks: dict[str, Task] = attrs.field(factory=dict)

    @classmethod
    def of(
        cls,
        target: Any,
        *,
        kv: str | KvConfig = "strict",
        script: dict[str, list[int]] | None = None,
    ) -> Scenario:
        """A fresh world for ``target``; ``script`` answers KV choices by label."""
        config = KvConfig.named(kv) if isinstance(kv, str) else kv
        platform = Platform.create(
            backend=ScriptedBackend(dict(script or {})),
            kv=config,
            durable=getattr(target, "durable_objects", None),
        )
        return cls(target, platform)

    # -- requests ------------------------------------------------------------------------------

    def send(
        self,
        name: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        location: str = "A",
    ) -> Task:
        """Send a request named ``name``; nothing of it runs until a step."""
        if name in self.tasks:
            raise QmodelError(f"a request named {name!r} was already sent; pick another name")
        request = Request.make(method, path, query=query, json_body=body)
        task = self.platform.send(self.target, request, location=location, name=name)
        self.tasks[name] = task
        return task

    def _family(self, root: Task) -> list[Task]:
        ready = []
        for t in self.platform.scheduler.runnable():
            node: Task | None = t
            while node is not None and node is not root:
                node = node.parent
            if node is root:
                ready.append(t)
        return ready

    def step(self, name: str) -> bool:
        """One step of request ``name`` (or of a request it waits on); ``False`` if it cannot
        step (finished, or waiting on something outside the script's control)."""
        task = self.tasks[name]
        family = self._family(task)
        if not family:
            return False
        self.platform.scheduler.step(family[0])
        return True

    def pending_op(self, name: str) -> str | None:
        """The operation request ``name`` is suspended on, as the trace shows it."""
        op = self.tasks[name].pending
        return None if op is None else op.describe()

    def run_until(self, name: str, op_contains: str, *, max_steps: int = 10_000) -> bool:
        """Step request ``name`` until its next operation's description contains
        ``op_contains`` (``True``), or until it finishes (``False``)."""
        task = self.tasks[name]
        for _ in range(max_steps):
            if task.finished:
                return False
            op = task.pending
            if task.started and op is not None and op_contains in op.describe():
                return True
            if not self.step(name):
                return False
        raise QmodelError(f"{name} did not reach {op_contains!r} within {max_steps} steps")

    def run(self, name: str, *, max_steps: int = 10_000) -> Response:
        """Run request ``name`` to its response, letting virtual time pass while it only waits
        on a timer (a retry's backoff)."""
        task = self.tasks[name]
        for _ in range(max_steps):
            if task.finished:
                break
            if not self.step(name) and not self.platform.scheduler.advance_to_next_wakeup():
                raise QmodelError(f"{name} cannot make progress (waiting on a gate or on nothing)")
        return self.response(name)

    def call(self, name: str, method: str, path: str, **kw: Any) -> Response:
        """Send a request and run it to its response."""
        self.send(name, method, path, **kw)
        return self.run(name)

    def response(self, name: str) -> Response:
        task = self.tasks[name]
        if not task.finished:
            raise QmodelError(f"{name} has not answered yet")
        if task.killed:
            raise QmodelError(f"{name} was killed and never answered")
        if task.error is not None:
            raise task.error
        return task.result

    def invocation(self, name: str) -> Invocation:
        return self.tasks[name].invocation

    def kill(self, name: str) -> None:
        """Kill request ``name`` where it stands (earlier writes stay)."""
        self.platform.scheduler.kill(self.tasks[name])

    # -- world ---------------------------------------------------------------------------------

    def advance(self, ms: int) -> None:
        self.platform.scheduler.advance(ms)

    def settle(self, *, max_steps: int = 100_000) -> None:
        """Run every runnable task (background work included) until nothing can run."""
        self.platform.scheduler.run(max_steps=max_steps)

    def preload(self, key: str, value: Any) -> None:
        """Put starting data straight into the central KV store."""
        raw = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        self.platform.kv_store.preload(key, raw)

    def kv_json(self, key: str) -> Any:
        """What the central KV store holds under ``key``, parsed (``None`` if missing)."""
        return self.platform.kv_store.snapshot().json(key)

    @property
    def now(self) -> int:
        return self.platform.clock.now_ms

    def recorded(self) -> str:
        """The recorded choices, as canonical JSON."""
        return self.platform.choices.dumps()
