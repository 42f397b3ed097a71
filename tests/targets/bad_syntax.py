"""A worker file with a syntax error on line 5 (for the bad-input tests)."""


async def fetch(request, env, ctx)
    return None
