"""The Node lane: a user's real JavaScript worker under the simulated platform.

``qmodel check --target path/to/worker.mjs`` runs a Workers module (``export default { async
fetch(request, env, ctx) }``, ``.mjs`` or ``.js``) in Node 20.6+ with the simulated KV,
Durable Objects and Queues: every KV call, storage call, Durable Object request and queue send
the JavaScript makes (and every push batch to its ``queue()`` handler) is
relayed to the same simulator the Python designs use, as a scheduling point, so the machines,
invariants, shrinking and reports apply to the real code under Workers KV's real semantics.

From Python: ``machine_for(js_worker("worker.mjs"), protocol="queue")``. The pieces:
:mod:`~qmodel.node.target` (checking a module), :mod:`~qmodel.node.worker` (the target side),
:mod:`~qmodel.node.host` (the Node process and its protocol), ``host.mjs`` and ``loader.mjs``
(the JavaScript side), :mod:`~qmodel.node.config` (bindings from Wrangler's configuration).
"""

from qmodel.node.config import Bindings, bindings_for
from qmodel.node.errors import JavaScriptError, NodeLaneAborted
from qmodel.node.target import JsModule, JsWorker, js_worker
from qmodel.node.worker import NodeWorker

__all__ = [
    "Bindings",
    "JavaScriptError",
    "JsModule",
    "JsWorker",
    "NodeLaneAborted",
    "NodeWorker",
    "bindings_for",
    "js_worker",
]
