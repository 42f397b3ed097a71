"""A worker class whose constructor raises (a target error, not qmodel's)."""


class Worker:
    def __init__(self) -> None:
        raise RuntimeError("COMMENTS_URL is not configured")

    async def fetch(self, request, env, ctx):
        raise AssertionError("never constructed")
