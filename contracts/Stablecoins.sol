// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title Stablecoins with an issuer freeze
/// @notice Minimal ERC-20s whose issuer can freeze an address, each answering the question
/// "is this address frozen?" under the name a real issuer uses:
///
///   TetherLikeToken  isBlackListed(address)   addBlackList / removeBlackList   (the owner)
///   CircleLikeToken  isBlacklisted(address)   blacklist / unBlacklist          (the blacklister)
///   PaxosLikeToken   isFrozen(address)        freeze / unfreeze                (asset protection)
///
/// irctl's tests, sandboxes and drills deploy them on the local chain so that `evm.token_frozen`
/// reads a freeze the way it reads one on a real stablecoin.  A frozen address can neither send
/// nor receive, nor spend an allowance.  Not for funds: it exists to rehearse incident response.
abstract contract IssuerFreezableToken {
    string public name;
    string public symbol;
    uint8 public immutable decimals;
    uint256 public totalSupply;
    address public owner;

    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;
    mapping(address => bool) internal frozen;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    error NotAuthorized(address caller);
    error Frozen(address account);
    error InsufficientBalance(address account, uint256 balance, uint256 needed);
    error InsufficientAllowance(address spender, uint256 allowance, uint256 needed);
    error ZeroAddress();

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotAuthorized(msg.sender);
        _;
    }

    constructor(string memory name_, string memory symbol_, uint8 decimals_, uint256 supply) {
        name = name_;
        symbol = symbol_;
        decimals = decimals_;
        owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
        _mint(msg.sender, supply);
    }

    function transfer(address to, uint256 value) external returns (bool) {
        _transfer(msg.sender, to, value);
        return true;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        if (spender == address(0)) revert ZeroAddress();
        _notFrozen(msg.sender);
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        _notFrozen(msg.sender);
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            if (allowed < value) revert InsufficientAllowance(msg.sender, allowed, value);
            allowance[from][msg.sender] = allowed - value;
        }
        _transfer(from, to, value);
        return true;
    }

    function mint(address to, uint256 value) external onlyOwner {
        _mint(to, value);
    }

    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroAddress();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    function _notFrozen(address account) internal view {
        if (frozen[account]) revert Frozen(account);
    }

    function _transfer(address from, address to, uint256 value) private {
        if (to == address(0)) revert ZeroAddress();
        _notFrozen(from);
        _notFrozen(to);
        uint256 balance = balanceOf[from];
        if (balance < value) revert InsufficientBalance(from, balance, value);
        unchecked {
            balanceOf[from] = balance - value;
        }
        balanceOf[to] += value;
        emit Transfer(from, to, value);
    }

    function _mint(address to, uint256 value) private {
        if (to == address(0)) revert ZeroAddress();
        totalSupply += value;
        balanceOf[to] += value;
        emit Transfer(address(0), to, value);
    }
}

/// The freeze as USDT on Ethereum names it: a public `isBlackListed` mapping, set by the owner.
contract TetherLikeToken is IssuerFreezableToken {
    event AddedBlackList(address user);
    event RemovedBlackList(address user);

    constructor(string memory name_, string memory symbol_, uint8 decimals_, uint256 supply)
        IssuerFreezableToken(name_, symbol_, decimals_, supply)
    {}

    function isBlackListed(address account) external view returns (bool) {
        return frozen[account];
    }

    function addBlackList(address account) external onlyOwner {
        frozen[account] = true;
        emit AddedBlackList(account);
    }

    function removeBlackList(address account) external onlyOwner {
        frozen[account] = false;
        emit RemovedBlackList(account);
    }
}

/// The freeze as USDC names it: `isBlacklisted`, set by a blacklister the owner appoints.
contract CircleLikeToken is IssuerFreezableToken {
    address public blacklister;

    event Blacklisted(address indexed account);
    event UnBlacklisted(address indexed account);
    event BlacklisterChanged(address indexed newBlacklister);

    constructor(string memory name_, string memory symbol_, uint8 decimals_, uint256 supply)
        IssuerFreezableToken(name_, symbol_, decimals_, supply)
    {
        blacklister = msg.sender;
        emit BlacklisterChanged(msg.sender);
    }

    modifier onlyBlacklister() {
        if (msg.sender != blacklister) revert NotAuthorized(msg.sender);
        _;
    }

    function isBlacklisted(address account) external view returns (bool) {
        return frozen[account];
    }

    function blacklist(address account) external onlyBlacklister {
        frozen[account] = true;
        emit Blacklisted(account);
    }

    function unBlacklist(address account) external onlyBlacklister {
        frozen[account] = false;
        emit UnBlacklisted(account);
    }

    function updateBlacklister(address newBlacklister) external onlyOwner {
        if (newBlacklister == address(0)) revert ZeroAddress();
        blacklister = newBlacklister;
        emit BlacklisterChanged(newBlacklister);
    }
}

/// The freeze as Paxos-issued tokens name it: `isFrozen`, set by the asset protection role.
contract PaxosLikeToken is IssuerFreezableToken {
    address public assetProtectionRole;

    event AddressFrozen(address indexed account);
    event AddressUnfrozen(address indexed account);
    event AssetProtectionRoleSet(address indexed newRole);

    constructor(string memory name_, string memory symbol_, uint8 decimals_, uint256 supply)
        IssuerFreezableToken(name_, symbol_, decimals_, supply)
    {
        assetProtectionRole = msg.sender;
        emit AssetProtectionRoleSet(msg.sender);
    }

    modifier onlyAssetProtection() {
        if (msg.sender != assetProtectionRole) revert NotAuthorized(msg.sender);
        _;
    }

    function isFrozen(address account) external view returns (bool) {
        return frozen[account];
    }

    function freeze(address account) external onlyAssetProtection {
        frozen[account] = true;
        emit AddressFrozen(account);
    }

    function unfreeze(address account) external onlyAssetProtection {
        frozen[account] = false;
        emit AddressUnfrozen(account);
    }

    function setAssetProtectionRole(address newRole) external onlyOwner {
        if (newRole == address(0)) revert ZeroAddress();
        assetProtectionRole = newRole;
        emit AssetProtectionRoleSet(newRole);
    }
}
