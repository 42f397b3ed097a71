"""What goes wrong in the Node lane, and how each failure surfaces.

* A JavaScript error escaping the worker's ``fetch`` is the worker's fault: it is raised into
  the simulated request as :class:`JavaScriptError`, which the platform answers with a 500 and
  logs in the invocation's errors, as Workers answer an uncaught exception (error 1101).
* A setup problem (no Node, an old Node, a module that does not load) is found while resolving
  the target and raised as :class:`~qmodel.errors.InvalidTarget` (exit status 2).
* The Node process failing in the middle of a run (it died, or stopped answering) says nothing
  about the worker: :class:`NodeLaneAborted` stops the run at once. It derives from
  ``BaseException`` so that neither the simulated platform (which turns a worker's exceptions
  into 500s) nor Hypothesis (which would shrink it as a finding) takes it for a failure of the
  code under test.
"""

from __future__ import annotations

__all__ = ["JavaScriptError", "NodeLaneAborted"]


class JavaScriptError(Exception):
    """A JavaScript exception escaped the worker, as ``TypeError: x is not a function
    (worker.mjs:3:7)``: the error and where it was thrown.

    ``stack`` holds the JavaScript stack.
    """

    def __init__(self, message: str, stack: str = "") -> None:
        super().__init__(message)
        self.stack = stack


class NodeLaneAborted(BaseException):
    """The Node process of the lane failed (it exited, was killed, or stopped answering); the run
    cannot go on. The message says what happened and what to do."""
