"""A worker stuck inside one step: a loop with no await (for the watchdog test)."""


class Worker:
    async def fetch(self, request, env, ctx):
        n = 0
        while True:
            n += 1


worker = Worker()
