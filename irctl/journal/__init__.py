"""The journal: a run's typed events, the append-only hash-chained store, and the fold.

Owns the event types and their canonical lines (:mod:`irctl.journal.events`), the event
store over SQLite or PostgreSQL (:mod:`irctl.journal.store`, in parts: opening a database,
appending, the run executor lock) and run state as a pure fold over the events
(:mod:`irctl.journal.state`).  It may import only the public SDK below it
(:mod:`irctl.errors`, :mod:`irctl.canonical`): it knows no runbook, no engine and no view.
"""
