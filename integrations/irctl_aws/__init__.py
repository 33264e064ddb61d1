"""AWS containment for irctl: keys, 2FA, signing keys, workers, secrets, WAF, evidence
(S3 Object Lock, CloudTrail events).

Install with ``pip install 'irctl[aws]'``.  Importing this package registers the
``aws.*`` actions; boto3 is imported only when an action runs.
"""

from irctl_aws import cloudtrail as cloudtrail
from irctl_aws import evidence as evidence
from irctl_aws import iam as iam
from irctl_aws import kms as kms
from irctl_aws import services as services
from irctl_aws import wafv2 as wafv2
