"""The actions irctl ships, one module per namespace, registered through entry points.

``manual`` (confirm, input), ``http`` (request), ``shell`` (exec), ``wait``
(sleep, until) and ``notify`` (console).  They may import only the public SDK, as a third
party's integration would: :mod:`irctl.actions`, :mod:`irctl.errors` and the durations of
:mod:`irctl.runbook.model`; nothing that plans, executes, records or shows a run.
"""
