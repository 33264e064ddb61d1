"""Telling people: paging (PagerDuty), the public status page (Statuspage) and e-mail (SMTP).

Three namespaces, each a module of its own named by its own entry point, so a runbook that
pages imports neither the status page nor SMTP:

- ``page.*`` (:mod:`irctl_comms.pagerduty`): PagerDuty Events API v2, trigger, acknowledge
  and resolve an alert by its dedup key;
- ``status_page.*`` (:mod:`irctl_comms.statuspage`): Atlassian Statuspage REST API v1, open
  and update an incident, set a component's status;
- ``email.*`` (:mod:`irctl_comms.mail`): one message over SMTP with STARTTLS.

They use the standard library only (urllib, smtplib, email).  :mod:`irctl_comms.testing`
holds local stand-ins for the PagerDuty and Statuspage APIs, for tests and sandbox drills;
no action imports it.
"""
