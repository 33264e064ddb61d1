"""irctl: a security incident response runbook engine.

The CLI is a thin shell over this library: load a runbook with
:func:`irctl.runbook.loader.load_runbook`, plan it with :func:`irctl.engine.plan.make_plan`,
execute it with :class:`irctl.engine.engine.Engine` against an
:class:`irctl.journal.store.Store`, and check what happened with
:mod:`irctl.record.transcript`.
"""

__version__ = "0.1.0"
