"""Safe multisig checks for irctl: verify a transaction before signing, snapshot a Safe, read
its state and whether a transaction executed.

Importing this package registers ``safe.verify_tx``, ``safe.snapshot`` and ``safe.state``;
``irctl safe verify`` is the same verification on the command line.  web3,
eth-abi and eth-utils are imported only when something is hashed or read.

=============  ==============================================================
``tx``         a Safe transaction, parsed and checked from any source
``hashing``    domain hash, message hash and safeTxHash for every Safe version
``decoding``   call data, known Safe and token methods, nested MultiSend batches
``verify``     the flags, trusted libraries and :func:`~verify.verify`
``sts``        reading a proposal from a Safe Transaction Service
``registry``   the workspace's Safe registry (``safe-registry.yaml``)
``snapshot``   reading a Safe on chain and comparing it with the registry
``actions``    the two actions and their blocking policy
``state``      ``safe.state``: storage, and a transaction's execution events
=============  ==============================================================
"""

from irctl_evm.safe import actions as actions
from irctl_evm.safe import state as state
