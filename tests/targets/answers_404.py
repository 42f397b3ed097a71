"""A worker that speaks no protocol qmodel knows: every request answers 404."""

from qmodel.sim.http import Response


async def fetch(request, env, ctx):
    return Response("not found", 404)
