"""Wallets for irctl: balances, pausing a token, sweeping a hot wallet to cold storage, reading
a stablecoin issuer's freeze.

Install with ``pip install 'irctl[evm]'``.  Importing this package registers the
``evm.*`` actions; web3 and eth-account are imported only when an action runs.
The ``safe.*``, ``totp.*`` and ``reserves.*`` namespaces are modules of their own
(:mod:`irctl_evm.safe`, :mod:`irctl_evm.totp`, :mod:`irctl_evm.reserves`), each
named by its own entry point.  :mod:`irctl_evm.watch` is what ``irctl watch`` runs: it
follows a chain for the hot wallets and Safes in ``vars.watch`` and registers no action.
"""

from irctl_evm import actions as actions
from irctl_evm import freezes as freezes
