"""The sound design with ``GET /api/comments?after=`` served from KV: it pages through a
``list()`` of the archived messages (``comment:{id}``, written in the background after each
post) and reads each one. Correct, but what it serves lags the queue object by KV's list views
(up to 60 s, reference 1.8): a poll soon after a reply may not show it yet."""

import json

from qmodel.sim.http import json_response
from qmodel.workers import SoundWorker


class ListAfterWorker(SoundWorker):
    def __repr__(self) -> str:
        return "ListAfterWorker()"

    async def list(self, url, env):
        params = url.search_params
        if "after" not in params:
            return await super().list(url, env)
        after, limit = int(params["after"]), int(params.get("limit", "50"))
        kv = env.COMMENTS_KV
        found, cursor = [], None
        while True:
            page = await kv.list(prefix="comment:", cursor=cursor)
            for key in page.keys:
                raw = await kv.get(key.name)
                if raw is not None:
                    message = json.loads(raw)
                    if message["timestamp"] > after:
                        found.append(message)
            if page.list_complete:
                break
            cursor = page.cursor
        found.sort(key=lambda m: (m["timestamp"], m["id"]))
        return json_response(found[:limit], 200)
