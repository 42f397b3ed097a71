"""A worker that never answers: it awaits KV forever (for the step-limit tests)."""


class Worker:
    async def fetch(self, request, env, ctx):
        while True:
            await env.COMMENTS_KV.get("anything")


worker = Worker()
