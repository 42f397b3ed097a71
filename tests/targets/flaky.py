"""A worker that breaks a rule once per process: its first request ever answers 500, and the
same example run again passes (state kept between examples, which Hypothesis calls flaky)."""

from qmodel.sim.http import Response
from qmodel.workers import SoundWorker

_sound = SoundWorker()
durable_objects = SoundWorker.durable_objects
_answered = []


async def fetch(request, env, ctx):
    if not _answered:
        _answered.append(True)
        return Response("first request of the process", 500)
    return await _sound.fetch(request, env, ctx)
