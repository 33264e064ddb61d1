"""The actions irctl ships, one module per namespace, registered through entry points.

``manual`` (confirm, input), ``http`` (request), ``shell`` (exec), ``wait``
(sleep, until) and ``notify`` (console).  They use only the public SDK in
:mod:`irctl.actions`, as a third party's integration would.
"""
