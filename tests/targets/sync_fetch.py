"""A worker whose fetch is not async (for the bad-input tests)."""

from qmodel.sim import Response


def fetch(request, env, ctx):
    return Response("ok")
