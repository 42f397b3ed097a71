"""The Python designs under test: the seeds' worker with a switch per fix, and the sound design.

* :class:`CommentsWorker` with :class:`Fixes`: ``Fixes.seed_000()`` (queue era, all bugs),
  ``Fixes.seed_004()`` (PATCH era before its fix), ``Fixes.all()`` (every fix on);
* :class:`SoundWorker`: the queue in a Durable Object;
* :class:`MessageQueue`: the Durable Object both use.

A design lists the Durable Object classes it needs in ``durable_objects`` (binding -> class).
"""

from qmodel.workers.comments import CommentsWorker, Fixes
from qmodel.workers.queue_do import MessageQueue
from qmodel.workers.sound import SoundWorker

__all__ = ["CommentsWorker", "Fixes", "MessageQueue", "SoundWorker"]
