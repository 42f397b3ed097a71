"""The claim race of CLAIM_NOT_ATOMIC in a worker whose POST answers ``{"ok": true}`` instead of
the stored message, as real workers may: the spec counts each message under the id its client
sent."""

from qmodel.catalog import entry
from qmodel.sim.http import json_response


class Worker:
    def __init__(self):
        self.inner = entry("CLAIM_NOT_ATOMIC").target()
        self.durable_objects = getattr(self.inner, "durable_objects", None)

    async def fetch(self, request, env, ctx):
        response = await self.inner.fetch(request, env, ctx)
        if request.method == "POST" and request.url.endswith("/api/comments"):
            if response.status == 200:
                return json_response({"ok": True})
        return response
