"""The clients that speak PROTOCOL.md to a target: frontends and bots.

Actors run as tasks in the simulated world and talk to the target only through
:meth:`qmodel.world.World.call`, which records every exchange in the history. Every decision
they make that could go otherwise (a clock read straddling a millisecond, how long a generation
takes and whether it fails) is a choice from the world's one source.
"""

from qmodel.actors.bot import Bot
from qmodel.actors.frontend import Frontend

__all__ = ["Bot", "Frontend"]
