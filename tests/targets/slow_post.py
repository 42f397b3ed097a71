"""The sound design with a POST that does more work after its write, before it answers (it
waits five seconds, then reads the queue object twice), and answers ``{id, timestamp,
status}`` as real workers may, not the stored message: a bot can claim the message while its
POST is still on its way back to the frontend."""

from qmodel.sim.http import json_response
from qmodel.sim.scheduler import sleep
from qmodel.workers import SoundWorker
from qmodel.workers.queue_do import call


class SlowPostWorker(SoundWorker):
    def __repr__(self) -> str:
        return "SlowPostWorker()"

    async def post(self, body, env, ctx):
        response = await super().post(body, env, ctx)
        await sleep(5_000)
        for _ in range(2):
            await call(env, "/recent", {})
        if response.status != 200:
            return response
        stored = response.json_body()
        return json_response(
            {"id": stored["id"], "timestamp": stored["timestamp"], "status": "success"}
        )
