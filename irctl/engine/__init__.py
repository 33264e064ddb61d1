"""The engine: executes a plan against the store, durably, and acts only on what it verified.

Owns the plan (every step resolved and hashed before anything runs), the
:class:`~irctl.engine.engine.Engine` and its parts, one module each (run creation and the
signed start; step scheduling and fan-out; one action step; the approval gate; in-doubt
resolution; operator acts — decisions, answers, marks, aborts; writing the journal), the
guard that verifies a run's journal before acting, and the integrations' preflight.  It may
import the record, the workspace, the journal, the runbook and the public SDK; never the
serve endpoints, the drills, the CLI, a stand-in or an integration (actions are found by
name in the registry).
"""
