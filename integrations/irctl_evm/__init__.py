"""Wallets for irctl: balances, pausing a token, sweeping a hot wallet to cold storage.

Install with ``pip install 'irctl[evm]'``.  Importing this package registers the
``evm.*`` actions; web3 and eth-account are imported only when an action runs.
"""

from irctl_evm import actions as actions
