"""Slack for irctl: war rooms, live run updates, approvals from Slack.

Install with ``pip install 'irctl[slack]'``.

Importing this package registers the ``slack.*`` actions; slack-sdk is imported
only when an action runs or a notifier starts.
"""

from irctl_slack import actions as actions
from irctl_slack import notifier as notifier
