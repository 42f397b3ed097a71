"""The chat protocol: frontends post, bots answer, in three eras (:mod:`.eras`).

Its parts: the actors (:mod:`.frontend`, :mod:`.bot`), the reference model (:mod:`.spec`),
what the settled world shows (:mod:`.observe`), and the protocol values (:mod:`.eras`). Its
invariants live in ``qmodel.invariants.chat``.
"""
