"""``irctl serve``: Slack's interactivity endpoint and the reviewer's read-only views.

Owns the verification of Slack's signed requests and Socket Mode
(:mod:`irctl.serve.slack`), the alerts that start runbooks (``POST /alerts/NAME``,
:mod:`irctl.serve.triggers`) and the read-only HTML pages of runs and transcripts
(:mod:`irctl.serve.review`).  It may import the engine, the record, the workspace, the
journal, the runbook and the public SDK, and of the integrations only
:mod:`irctl_slack.notifier`, to redraw the approval message a click came from; never the
drills or the CLI.
"""
