"""A worker that breaks a rule once per process: the first post of frontend-2 ever answers 500,
and the same example run again passes (state kept between examples, which Hypothesis calls
flaky). The conformance run posts from frontend-1 only, so the search meets it first."""

from qmodel.sim.http import Response
from qmodel.workers import SoundWorker

_sound = SoundWorker()
durable_objects = SoundWorker.durable_objects
_answered = []


async def fetch(request, env, ctx):
    if not _answered and "frontend-2" in (request.body or ""):
        _answered.append(True)
        return Response("first post of frontend-2 in the process", 500)
    return await _sound.fetch(request, env, ctx)
