"""Proof of reserves, its first half: a proof of liabilities any customer can check.

``build`` turns a liabilities file (one row per account, one column per asset) into a
Merkle-sum tree whose nodes each commit to both children's per-asset sums, with one salted leaf
per account; it writes the root, one inclusion proof per account and a manifest signed by the
installation key.  ``verify_proof`` (a single file that needs only the standard library, for
customers) checks one proof against a published root.

Modules: ``liabilities`` (the CSV), ``tree`` (the levels on disk), ``proofs`` (the proof files),
``manifest`` (the signed manifest), ``build`` (the passes), ``verify_proof`` (the customer's
check).  It may import only ``irctl.errors``, ``irctl.canonical`` and ``irctl.identity``
(``verify_proof`` nothing but the standard library); only the CLI imports it.
"""

from irctl.reserves.build import BuildResult, build
from irctl.reserves.liabilities import parse_precisions
from irctl.reserves.manifest import ManifestCheck, verify_manifest
from irctl.reserves.verify_proof import ProofError, Verified, verify

__all__ = [
    "BuildResult",
    "ManifestCheck",
    "ProofError",
    "Verified",
    "build",
    "parse_precisions",
    "verify",
    "verify_manifest",
]
