"""The named properties qmodel checks, installed as ``qmodel.invariants``: one module per
invariant id, organised by protocol.

* :mod:`.platform`: the platform's rules, which every protocol checks (no 5xx, no swallowed
  429, no request that never answers, ...);
* :mod:`.chat`: the chat protocol's invariants;
* :mod:`.jobs`: the job queue protocol's invariants.

Each protocol lists its invariants in order (``Protocol.invariants``); nothing registers itself
by being imported. :func:`qmodel.check.select` picks some of them by id.
"""
