"""Proof of reserves, its first half: a proof of liabilities any customer can check.

``build`` turns a liabilities file (one row per account, one column per asset) into a
Merkle-sum tree whose nodes each commit to both children's per-asset sums, with one salted leaf
per account; it writes the root, one inclusion proof per account (in a bundle of a few large
files with an index, or a file each) and a manifest signed by the installation key.
``extract`` takes one customer's proof out of the folder; ``verify_proof`` (a single file that
needs only the standard library, for customers) checks one proof against a published root.

Modules: ``liabilities`` (the CSV), ``tree`` (the levels on disk), ``proofs`` (the proofs and the
``files`` layout), ``bundle`` (the ``bundle`` layout and its index), ``manifest`` (the signed
manifest), ``build`` (the passes), ``extract`` (one proof out), ``verify_proof`` (the
customer's check).  It may import only ``irctl.errors``, ``irctl.canonical`` and ``irctl.identity``
(``verify_proof`` nothing but the standard library); only the CLI imports it.
"""

from irctl.reserves.build import BuildResult, build
from irctl.reserves.extract import Extracted, extract
from irctl.reserves.liabilities import parse_precisions
from irctl.reserves.manifest import LAYOUTS, ManifestCheck, verify_manifest
from irctl.reserves.verify_proof import ProofError, Verified, verify

__all__ = [
    "LAYOUTS",
    "BuildResult",
    "Extracted",
    "ManifestCheck",
    "ProofError",
    "Verified",
    "build",
    "extract",
    "parse_precisions",
    "verify",
    "verify_manifest",
]
