"""Stand-ins: local servers that play the outside world for the demo and the tests.

Owns the Slack Web API stand-in (:mod:`irctl.standins.slack`) and the exchange admin API
stand-in (:mod:`irctl.standins.exchange_admin`): real HTTP servers on 127.0.0.1 that
record what they received.  Integration authors reach them through :mod:`irctl.testing`.
They may import only :mod:`irctl.errors`; nothing of the product imports them but
:mod:`irctl.testing` and the demo.
"""
