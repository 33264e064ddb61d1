"""The short soak: a few runs driven to their end through the real ``irctl`` on a durable
PostgreSQL while processes are killed, the database is restarted and every approval and
resume is sent twice at once (bench/soak.py; ``make soak`` is the long one).  Nothing may be
executed twice, lost, or counted twice.  With the run lock made a no-op by hand, this soak
fails (runs stopped as tampered, journals that do not verify, approvals recorded twice)."""

from __future__ import annotations

from bench.soak import Settings, soak, table


def test_a_short_soak_under_kills_and_a_database_restart_loses_and_doubles_nothing() -> None:
    settings = Settings(runs=6, steps=8, workers=4, kills=4, restarts=1, twice=1.0,
                        time_limit=240.0)  # fmt: skip
    figures = soak(settings, quiet=True)
    shown = table(figures, settings)
    assert figures.runs == 6, shown
    assert figures.completed == 6, shown
    assert figures.double_effects == 0, shown
    assert figures.missing_effects == 0, shown
    assert figures.unverified == 0, shown
    assert figures.double_approvals == 0, shown
    assert figures.short_quorum == 0, shown
    assert figures.restarts == 1, shown
    assert figures.kills >= 1, shown  # faults were really injected
    assert figures.steps >= 6 * 8, shown
