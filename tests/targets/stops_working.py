"""A worker that takes the first human message of its process and refuses every later one
(404): the conformance run passes, and then no example of the search has any work
acknowledged."""

import json

from qmodel.sim.http import Response
from qmodel.workers import SoundWorker

_sound = SoundWorker()
durable_objects = SoundWorker.durable_objects
_posts = []


async def fetch(request, env, ctx):
    if request.method == "POST" and request.url.endswith("/api/comments"):
        if json.loads(request.body or "{}").get("message-type") == "human":
            if _posts:
                return Response("closed", 404)
            _posts.append(True)
    return await _sound.fetch(request, env, ctx)
