"""AWS containment for irctl: keys, 2FA, signing keys, workers, secrets, evidence.

Install with ``pip install 'irctl[aws]'``.  Importing this package registers the
``aws.*`` actions; boto3 is imported only when an action runs.
"""
