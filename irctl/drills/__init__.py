"""Drills: runbooks rehearsed in tabletop or sandbox mode, scheduled, and scored.

Owns loading and driving a drill and its score (:mod:`irctl.drills.drill`), the
APScheduler wiring of scheduled drills (:mod:`irctl.drills.scheduler`) and the
scorecard for management (:mod:`irctl.drills.scorecard`).  It may import the engine, the
record, the workspace, the journal, the runbook and the public SDK; never the serve
endpoints or the CLI.
"""
