"""Stand-ins for PagerDuty's Events API v2 and Atlassian Statuspage's REST API v1.

Real HTTP servers on 127.0.0.1 (a free port each) for tests and sandbox drills.  They check
requests as the documented APIs do (required fields, enums, the credential) and answer a wrong
one with the API's documented status, keep the state a test asserts on, and record every
request without its credential::

    from irctl_comms.testing import PagerDutyStandIn, StatuspageStandIn

    with PagerDutyStandIn(routing_keys=[KEY]) as pd:
        ...  # integrations.page.base_url: pd.url
        assert pd.alert("INC-42").status == "triggered"

    with StatuspageStandIn("api-key", page_id="kctbh9vrtdwd",
                           components={"wd0001": "Withdrawals"}) as sp:
        ...  # integrations.status_page.base_url: sp.url  (it ends in /v1)
        assert sp.incidents("kctbh9vrtdwd")[0]["status"] == "investigating"

Faults: :meth:`rate_limit` answers 429 (or Statuspage's older 420) with ``Retry-After``,
:meth:`fail_next` any status (503, 500...), before the request takes effect or, with
``after_effect=True``, after it did (a 502 from a gateway that passed the request on).
:meth:`hold` makes the next matching request take effect and then wait before it is
answered: the moment a crash-safety test kills irctl.

Only the standard library is imported: a test loads this package without the actions.  The
shared server is :mod:`irctl_comms.testing._server`; each API has a module of its own.
"""

from irctl_comms.testing._server import Held, Request
from irctl_comms.testing.pagerduty import Alert, PagerDutyStandIn
from irctl_comms.testing.statuspage import StatuspageStandIn

__all__ = ["Alert", "Held", "PagerDutyStandIn", "Request", "StatuspageStandIn"]
