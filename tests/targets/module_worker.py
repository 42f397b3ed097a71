"""A worker written as a module with a module-level fetch (the sound design underneath)."""

from qmodel.workers import SoundWorker

_sound = SoundWorker()
durable_objects = SoundWorker.durable_objects


async def fetch(request, env, ctx):
    return await _sound.fetch(request, env, ctx)
