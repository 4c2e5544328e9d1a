// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";
import {CallType, ERC7579Utils} from "@openzeppelin/contracts/account/utils/draft-ERC7579Utils.sol";
import {
    Execution,
    IERC7579Execution,
    IERC7579Module,
    MODULE_TYPE_VALIDATOR
} from "@openzeppelin/contracts/interfaces/draft-IERC7579.sol";

import {PackedUserOperation, _packValidationData} from "./interfaces/IERC4337.sol";
import {Call, IAgentAccount} from "./interfaces/IAgentAccount.sol";
import {ISessionKeyValidator} from "./interfaces/ISessionKeyValidator.sol";

/// @title SessionKeyValidator
/// @notice Holds the on-chain policy of agent (session) keys and validates their user operations
/// for {AgentAccount}s and, as an ERC-7579 validator module (type 1), for ERC-7579 accounts such as
/// OpenZeppelin's `AccountERC7579`. Whatever an agent signs, what its account can lose is bounded by
/// its session:
///
/// - **lane**: the operation's nonce key must be one of the key's own, so an agent can neither use
///   the owner's lane nor another agent's. On {AgentAccount}: `uint160(key)` in its low 160 bits
///   (above them only a period index). On an ERC-7579 account, whose nonce key is `validator module
///   (20 bytes) ‖ 4 bytes`: the session's `lane` (2 bytes, assigned at the key's first grant on the
///   account, distinct per key) then the period index (2 bytes);
/// - **gas**: unless the session's one allowed paymaster pays, each operation is charged its maximum
///   cost `(preVerificationGas + verificationGasLimit + callGasLimit) × maxFeePerGas` (what the
///   EntryPoint prefunds) against the gas budget; unused gas is not credited back;
/// - **usage**: an optional cap on the number of operations;
/// - **calls**: every call goes to a listed target (never the account, this validator or an
///   EntryPoint) and, when it carries data, to a listed function of it (or any function, only when
///   granted explicitly); the calls' native value counts against the spend cap;
/// - **tokens**: on a listed token, `transfer`, `approve`, `increaseAllowance` and
///   `transferFrom(account, …)` count against that token's cap (an approval counts in full);
/// - **periods** (optional): the native value of the operations of one period counts against a
///   periodic cap. The operation names its period `p` in the bits of its nonce key above the key's
///   address, and the validator returns that period's window `[validAfter + p × period, … + period)`
///   (within the session's window) as the validation data: the EntryPoint, not the validator, checks
///   the time, so no clock is read in validation.
///
/// Session signature (106 bytes, the same on both paths): `0x08 ‖ account (20) ‖ key (20) ‖ r (32) ‖
/// s (32) ‖ v (1)`, an ECDSA signature by `key` over the EIP-191 hash
/// `keccak256("\x19Ethereum Signed Message:\n32" ‖ userOpHash)`, with `v ∈ {27, 28}` and a low `s`.
///
/// The two paths. {AgentAccount} calls {validateSessionUserOp} and its calls are its own `execute` and
/// `executeBatch`. An ERC-7579 account calls {validateUserOp} (after `installModule(1, this, "")`, which
/// calls {onInstall}); its calls are `execute(mode, executionCalldata)` with a single (0x00) or batch
/// (0x01) call type and the default exec type, decoded by OpenZeppelin's `ERC7579Utils` as its
/// `AccountERC7579` decodes them; delegatecall, the try exec type, `executeFromExecutor` and every other
/// function of the account are refused, and so is a call to address 0 (which `AccountERC7579` makes
/// to itself). {onUninstall} bumps the account's module generation: sessions granted before it stay
/// refused on the module path, after a reinstallation too, until re-granted. Session keys have no
/// ERC-1271 power on either path ({isValidSignatureWithSender} returns 0xffffffff).
///
/// ERC-7562: validation reads no block environment (no TIMESTAMP/NUMBER; the window goes into the
/// validation data), calls nothing, and every storage slot it touches is keyed with the account as
/// the innermost mapping key (storage "associated with the sender"), so unstaked accounts can use it.
contract SessionKeyValidator is ISessionKeyValidator {
    /// @notice First byte of every session signature.
    bytes1 public constant SESSION_MARKER = 0x08;

    /// @notice Exact length of a session signature.
    uint256 public constant SESSION_SIGNATURE_LENGTH = 106;

    /// @dev The canonical EntryPoints v0.7 and v0.8, never session targets (their `withdrawTo` and
    /// `withdrawStake` would move the account's deposit uncounted).
    address private constant ENTRY_POINT_V07 = 0x0000000071727De22E5E9d8BAf0edAc6f37da032;
    address private constant ENTRY_POINT_V08 = 0x4337084D9E255Ff0702461CF8895CE9E3b5Ff108;

    /// @dev ERC-20 functions counted against a token cap.
    bytes4 private constant TRANSFER = 0xa9059cbb; // transfer(address,uint256)
    bytes4 private constant APPROVE = 0x095ea7b3; // approve(address,uint256)
    bytes4 private constant INCREASE_ALLOWANCE = 0x39509351; // increaseAllowance(address,uint256)
    bytes4 private constant TRANSFER_FROM = 0x23b872dd; // transferFrom(address,address,uint256)

    /// @dev Sessions by key, then account (the account is the innermost key).
    mapping(address key => mapping(address account => Session)) internal _sessions;

    /// @dev Permissions by target, key and grant epoch, then account (innermost). Keying by epoch
    /// means a re-grant starts empty without clearing the old grant.
    mapping(
        address target => mapping(address key => mapping(uint256 epoch => mapping(address account => Permission)))
    ) internal _permissions;

    /// @dev Native value spent per period by key, epoch and period index, then account (innermost).
    mapping(
        address key => mapping(uint256 epoch => mapping(uint256 period => mapping(address account => uint128)))
    ) internal _periodSpent;

    /// @notice Shortest budget period, in seconds.
    uint32 public constant MIN_PERIOD = 60;

    /// @dev Listed selectors by target, selector, key and epoch, then account (innermost).
    mapping(
        address target
            => mapping(
            bytes4 selector => mapping(address key => mapping(uint256 epoch => mapping(address account => bool)))
        )
    ) internal _selectors;

    /// @dev Per account: the module's installation and the lanes given (one slot).
    struct ModuleState {
        bool installed;
        uint32 generation;
        uint16 lanes;
    }

    /// @dev Module state by account.
    mapping(address account => ModuleState) internal _modules;

    /// @dev ERC-7579 `execute(bytes32,bytes)`'s calldata head: selector, mode, offset, length.
    uint256 private constant EXECUTE_HEAD = 100;

    /// @inheritdoc ISessionKeyValidator
    function grantSession(SessionGrant calldata grant) external {
        address key = grant.key;
        if (key == address(0)) revert InvalidSessionKey();
        if (grant.validUntil != 0 && grant.validUntil <= grant.validAfter) {
            revert InvalidValidityWindow(grant.validAfter, grant.validUntil);
        }
        if ((grant.period == 0) != (grant.periodCap == 0) || (grant.period != 0 && grant.period < MIN_PERIOD)) {
            revert InvalidPeriod(grant.period, grant.periodCap);
        }

        address account = msg.sender;
        uint32 epoch = _sessions[key][account].epoch + 1;
        (uint16 lane, uint32 generation) = _laneOf(account, key);
        _sessions[key][account] = Session({
            validAfter: grant.validAfter,
            validUntil: grant.validUntil,
            revoker: grant.revoker,
            spendCap: grant.spendCap,
            spent: 0,
            gasCap: grant.gasCap,
            gasSpent: 0,
            maxOps: grant.maxOps,
            opsUsed: 0,
            paymaster: grant.paymaster,
            epoch: epoch,
            active: true,
            period: grant.period,
            lane: lane,
            periodCap: grant.periodCap,
            generation: generation
        });

        address entryPoint = _entryPointOf(account);
        for (uint256 i; i < grant.targets.length; ++i) {
            TargetPermission calldata t = grant.targets[i];
            address target = t.target;
            _requireGrantable(target, account, entryPoint);
            Permission storage p = _permissions[target][key][epoch][account];
            if (p.allowed) revert DuplicateTarget(target);
            if (t.anySelector && t.selectors.length != 0) revert ConflictingPermission(target);
            if (t.selectors.length != 0 && target.code.length == 0) revert NotAContract(target);
            p.allowed = true;
            p.anySelector = t.anySelector;
            for (uint256 j; j < t.selectors.length; ++j) {
                mapping(address => bool) storage listed = _selectors[target][t.selectors[j]][key][epoch];
                if (listed[account]) revert DuplicateSelector(target, t.selectors[j]);
                listed[account] = true;
            }
        }
        for (uint256 i; i < grant.tokens.length; ++i) {
            TokenLimit calldata limit = grant.tokens[i];
            address token = limit.token;
            _requireGrantable(token, account, entryPoint);
            if (limit.cap == 0) revert ZeroTokenCap(token);
            if (token.code.length == 0) revert NotAContract(token);
            Permission storage p = _permissions[token][key][epoch][account];
            if (p.isToken) revert DuplicateTarget(token);
            if (p.anySelector) revert ConflictingPermission(token);
            p.allowed = true;
            p.isToken = true;
            p.tokenCap = limit.cap;
        }

        emit SessionGranted(account, key, epoch, grant);
    }

    /// @inheritdoc ISessionKeyValidator
    function revokeSession(address account, address key) external {
        Session storage session = _sessions[key][account];
        if (msg.sender != account && (msg.sender != session.revoker || session.revoker == address(0))) {
            revert NotAuthorizedToRevoke(msg.sender);
        }
        _requireActive(session, account, key);
        session.active = false;
        emit SessionRevoked(account, key, msg.sender);
    }

    /// @inheritdoc ISessionKeyValidator
    function validateSessionUserOp(PackedUserOperation calldata userOp, bytes32 userOpHash)
        external
        returns (uint256 validationData)
    {
        return _validate(userOp, userOpHash, false);
    }

    /// @inheritdoc ISessionKeyValidator
    function validateUserOp(PackedUserOperation calldata userOp, bytes32 userOpHash)
        external
        returns (uint256 validationData)
    {
        return _validate(userOp, userOpHash, true);
    }

    /// @notice Installs the module on the caller, an ERC-7579 account (from its `installModule(1, this,
    /// data)`). `data` is ignored: sessions are granted with {grantSession} (e.g. in the same batch).
    /// Sessions granted before an earlier uninstallation stay ended.
    /// @param data Ignored.
    function onInstall(bytes calldata data) external {
        data; // ignored
        ModuleState storage m = _modules[msg.sender];
        if (m.installed) revert ModuleAlreadyInstalled(msg.sender);
        m.installed = true;
        emit ModuleInstalled(msg.sender, m.generation);
    }

    /// @notice Uninstalls the module from the caller and ends every session it has granted: the
    /// account's module generation is bumped (the epoch-bump way; nothing is cleared), and the module
    /// path refuses any session of an older generation, after a reinstallation too (a re-grant starts a
    /// session in the current one, on the key's same lane). Never reverts (an uninstallation must always
    /// go through). {AgentAccount}'s path ({validateSessionUserOp}) does not look at the generation; its
    /// sessions end with {revokeSession}.
    /// @param data Ignored.
    function onUninstall(bytes calldata data) external {
        data; // ignored
        ModuleState storage m = _modules[msg.sender];
        uint32 generation = m.generation + 1;
        m.installed = false;
        m.generation = generation;
        emit ModuleUninstalled(msg.sender, generation);
    }

    /// @inheritdoc IERC7579Module
    function isModuleType(uint256 moduleTypeId) external pure returns (bool) {
        return moduleTypeId == MODULE_TYPE_VALIDATOR;
    }

    /// @inheritdoc ISessionKeyValidator
    function isInitialized(address account) external view returns (bool) {
        return _modules[account].installed;
    }

    /// @inheritdoc ISessionKeyValidator
    function moduleState(address account) external view returns (bool installed, uint32 generation, uint16 lanes) {
        ModuleState storage m = _modules[account];
        return (m.installed, m.generation, m.lanes);
    }

    /// @inheritdoc ISessionKeyValidator
    /// @dev Session keys sign user operations only; no rule gives them ERC-1271 power.
    function isValidSignatureWithSender(address, bytes32, bytes calldata) external pure returns (bytes4) {
        return 0xffffffff;
    }

    /// @dev Both paths: {AgentAccount}'s (`asModule` false) and the ERC-7579 module's.
    function _validate(PackedUserOperation calldata userOp, bytes32 userOpHash, bool asModule)
        private
        returns (uint256 validationData)
    {
        bytes calldata sig = userOp.signature;
        if (sig.length != SESSION_SIGNATURE_LENGTH) revert InvalidSignatureLength(sig.length);
        if (sig[0] != SESSION_MARKER) revert InvalidSignatureMarker(sig[0]);

        // Sender binding: the signature names the account it was made for.
        address account = address(bytes20(sig[1:21]));
        if (account != userOp.sender || account != msg.sender) {
            revert AccountMismatch(account, userOp.sender, msg.sender);
        }
        address key = address(bytes20(sig[21:41]));

        Session storage session = _sessions[key][account];
        _requireActive(session, account, key);

        // Policy. Runs whatever the signature, so that estimation with a stub signature takes the
        // path (and the gas) of the real operation.
        uint256 periodIndex;
        uint256 value;
        if (asModule) {
            _requireCurrentGeneration(session, account, key);
            periodIndex = _modulePeriodOf(session, userOp.nonce >> 64);
            _chargeOperation(session, _gasCharge(session, userOp));
            value = _check7579Calls(userOp.callData, account, key, session.epoch, session.spendCap - session.spent);
        } else {
            periodIndex = _periodOf(session, userOp.nonce >> 64, key);
            _chargeOperation(session, _gasCharge(session, userOp));
            value = _checkCalls(userOp.callData, account, key, session.epoch, session.spendCap - session.spent);
        }
        if (value != 0) {
            // Cannot overflow or truncate: _checkCalls keeps value <= spendCap - spent < 2^128.
            // forge-lint: disable-next-line(unsafe-typecast)
            uint128 totalSpent = session.spent + uint128(value);
            session.spent = totalSpent;
            emit SessionSpent(account, key, value, totalSpent);
            if (session.period != 0) _chargePeriod(session, account, key, periodIndex, value);
        }
        (uint48 validAfter, uint48 validUntil) = _window(session, periodIndex);

        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(
            MessageHashUtils.toEthSignedMessageHash(userOpHash),
            uint8(sig[105]),
            bytes32(sig[41:73]),
            bytes32(sig[73:105])
        );
        bool sigFailed = err != ECDSA.RecoverError.NoError || signer != key;
        return _packValidationData(sigFailed, validUntil, validAfter);
    }

    /// @inheritdoc ISessionKeyValidator
    function getSession(address account, address key) external view returns (Session memory) {
        return _sessions[key][account];
    }

    /// @inheritdoc ISessionKeyValidator
    function getPermission(address account, address key, address target) external view returns (Permission memory) {
        return _permissions[target][key][_sessions[key][account].epoch][account];
    }

    /// @inheritdoc ISessionKeyValidator
    function isSelectorAllowed(address account, address key, address target, bytes4 selector)
        external
        view
        returns (bool)
    {
        Session storage session = _sessions[key][account];
        return session.active && _selectors[target][selector][key][session.epoch][account];
    }

    /// @inheritdoc ISessionKeyValidator
    function readSession(
        address account,
        address key,
        address[] calldata targets,
        bytes4[] calldata selectors,
        uint48 timestamp
    )
        external
        view
        returns (
            Session memory session,
            Permission[] memory permissions,
            bool[] memory selectorAllowed,
            uint256 periodIndex,
            uint256 spentInPeriod
        )
    {
        if (targets.length != selectors.length) {
            revert LengthMismatch(targets.length, selectors.length);
        }
        session = _sessions[key][account];
        permissions = new Permission[](targets.length);
        selectorAllowed = new bool[](targets.length);
        for (uint256 i; i < targets.length; ++i) {
            permissions[i] = _permissions[targets[i]][key][session.epoch][account];
            selectorAllowed[i] = _selectors[targets[i]][selectors[i]][key][session.epoch][account];
        }
        if (session.period != 0 && timestamp >= session.validAfter) {
            periodIndex = (timestamp - session.validAfter) / session.period;
            spentInPeriod = _periodSpent[key][session.epoch][periodIndex][account];
        }
    }

    /// @inheritdoc ISessionKeyValidator
    function periodSpent(address account, address key, uint256 periodIndex) external view returns (uint256) {
        return _periodSpent[key][_sessions[key][account].epoch][periodIndex][account];
    }

    /// @inheritdoc ISessionKeyValidator
    function isSessionActive(address account, address key) external view returns (bool) {
        Session storage session = _sessions[key][account];
        // A view for off-chain pre-checks, never called in validation; mirrors EntryPoint v0.7's test.
        // forge-lint: disable-next-item(block-timestamp)
        return session.active && session.validAfter <= block.timestamp
            && (session.validUntil == 0 || block.timestamp <= session.validUntil);
    }

    /// @inheritdoc ISessionKeyValidator
    function remainingBudget(address account, address key) external view returns (uint256) {
        Session storage session = _sessions[key][account];
        return session.active ? session.spendCap - session.spent : 0;
    }

    /// @inheritdoc ISessionKeyValidator
    function isTargetAllowed(address account, address key, address target) external view returns (bool) {
        Session storage session = _sessions[key][account];
        return session.active && _permissions[target][key][session.epoch][account].allowed;
    }

    /// @dev Reverts unless the session has been granted and not revoked.
    function _requireActive(Session storage session, address account, address key) private view {
        if (!session.active) {
            if (session.epoch == 0) revert UnknownSession(account, key);
            revert SessionIsRevoked(account, key);
        }
    }

    /// @dev Reverts when `target` may never be a session target of `account`.
    function _requireGrantable(address target, address account, address entryPoint) private view {
        if (
            target == account || target == address(this) || target == entryPoint || target == ENTRY_POINT_V07
                || target == ENTRY_POINT_V08
        ) revert ForbiddenTarget(target);
    }

    /// @dev The key's lane on `account` (assigned at its first grant there) and the account's module
    /// generation, for a grant.
    function _laneOf(address account, address key) private returns (uint16 lane, uint32 generation) {
        ModuleState storage m = _modules[account];
        generation = m.generation;
        lane = _sessions[key][account].lane;
        if (lane == 0) {
            uint16 lanes = m.lanes;
            if (lanes == type(uint16).max) revert LanesExhausted(account);
            lane = lanes + 1;
            m.lanes = lane;
            emit SessionLaneAssigned(account, key, lane);
        }
    }

    /// @dev Module path: reverts unless the module is installed on the account and the session was
    /// granted in the account's current module generation.
    function _requireCurrentGeneration(Session storage session, address account, address key) private view {
        ModuleState storage m = _modules[account];
        if (!m.installed) revert ModuleNotInstalled(account);
        if (session.generation != m.generation) revert SessionUninstalled(account, key);
    }

    /// @dev Module path: the period an operation names in its nonce key (`module ‖ lane ‖ period`),
    /// after checking the lane: bits 16–31 must be the session's lane, bits 0–15 the period index (0
    /// unless the session is periodic). The module's address above them is the account's (it picked this
    /// validator by it).
    function _modulePeriodOf(Session storage session, uint256 nonceKey) private view returns (uint256 periodIndex) {
        uint16 lane = session.lane;
        // The low 32 bits on purpose: the lane and the period index.
        // forge-lint: disable-next-line(unsafe-typecast)
        periodIndex = uint16(nonceKey);
        // forge-lint: disable-next-line(unsafe-typecast)
        if (uint16(nonceKey >> 16) != lane || (periodIndex != 0 && session.period == 0)) {
            // Cannot truncate: a nonce key is 192 bits.
            // forge-lint: disable-next-line(unsafe-typecast)
            uint192 named = uint192(nonceKey);
            revert NonceLaneNotAllowed(named, (uint192(uint160(address(this))) << 32) | (uint192(lane) << 16));
        }
    }

    /// @dev The account's EntryPoint when it tells (`entryPoint()`), else 0. Called at grant time only.
    function _entryPointOf(address account) private view returns (address entryPoint) {
        (bool ok, bytes memory ret) = account.staticcall(abi.encodeWithSignature("entryPoint()"));
        if (ok && ret.length >= 32) entryPoint = abi.decode(ret, (address));
    }

    /// @dev The period an operation names in its nonce key, after checking the lane: the low 160 bits
    /// must be the key, the 32 bits above them the period index (0 unless the session is periodic).
    function _periodOf(Session storage session, uint256 nonceKey, address key) private view returns (uint256) {
        uint192 lane = uint192(uint160(key));
        uint256 periodIndex = nonceKey >> 160;
        // The low 160 bits on purpose: they must name the key.
        // forge-lint: disable-next-line(unsafe-typecast)
        if (address(uint160(nonceKey)) != key || (periodIndex != 0 && session.period == 0)) {
            // Cannot truncate: a nonce key is 192 bits.
            // forge-lint: disable-next-line(unsafe-typecast)
            revert NonceLaneNotAllowed(uint192(nonceKey), lane);
        }
        return periodIndex;
    }

    /// @dev The validity window of an operation of `periodIndex`: the session's window, narrowed to
    /// the period's for a periodic session. Reverts when the period lies outside the window.
    function _window(Session storage session, uint256 periodIndex)
        private
        view
        returns (uint48 validAfter, uint48 validUntil)
    {
        validAfter = session.validAfter;
        validUntil = session.validUntil;
        uint256 period = session.period;
        if (period == 0) return (validAfter, validUntil);
        uint256 start = validAfter + periodIndex * period;
        uint256 end = start + period - 1;
        if (validUntil != 0 && end > validUntil) end = validUntil;
        if (start > end || end > type(uint48).max) revert PeriodOutsideWindow(periodIndex);
        // Cannot truncate: start <= end <= 2^48 - 1.
        // forge-lint: disable-next-line(unsafe-typecast)
        return (uint48(start), uint48(end));
    }

    /// @dev Counts `value` against the periodic cap of `periodIndex`.
    function _chargePeriod(Session storage session, address account, address key, uint256 periodIndex, uint256 value)
        private
    {
        mapping(address => uint128) storage spentIn = _periodSpent[key][session.epoch][periodIndex];
        uint128 spent = spentIn[account];
        uint256 remaining = session.periodCap - spent;
        if (value > remaining) revert PeriodCapExceeded(periodIndex, value, remaining);
        // Cannot truncate: value <= periodCap - spent < 2^128.
        // forge-lint: disable-next-line(unsafe-typecast)
        uint128 total = spent + uint128(value);
        spentIn[account] = total;
        emit PeriodSpent(account, key, periodIndex, value, total);
    }

    /// @dev What the operation is charged against the gas budget: 0 when the session's paymaster
    /// pays, else its maximum cost. Reverts when it names a paymaster the session does not allow.
    function _gasCharge(Session storage session, PackedUserOperation calldata userOp) private view returns (uint256) {
        bytes calldata paymasterAndData = userOp.paymasterAndData;
        if (paymasterAndData.length != 0) {
            address paymaster = paymasterAndData.length >= 20 ? address(bytes20(paymasterAndData[:20])) : address(0);
            if (paymaster == address(0) || paymaster != session.paymaster) revert PaymasterNotAllowed(paymaster);
            return 0;
        }
        // The EntryPoint refuses gas values above 120 bits before validation (AA94); the checked
        // arithmetic reverts on overflow anyway. The casts take the packed halves on purpose:
        // accountGasLimits = verificationGasLimit ‖ callGasLimit, gasFees = maxPriorityFee ‖ maxFee.
        uint256 limits = uint256(userOp.accountGasLimits);
        // forge-lint: disable-next-line(unsafe-typecast)
        return (userOp.preVerificationGas + (limits >> 128) + uint128(limits)) * uint128(uint256(userOp.gasFees));
    }

    /// @dev Counts one operation and `gasCost` (one storage write: the counters share a slot, so the
    /// write costs the same whatever the amounts, and estimation matches the real operation).
    function _chargeOperation(Session storage session, uint256 gasCost) private {
        uint32 maxOps = session.maxOps;
        uint32 opsUsed = session.opsUsed;
        if (maxOps != 0 && opsUsed >= maxOps) revert UsageLimitReached(maxOps);
        uint96 gasSpent = session.gasSpent;
        uint256 remaining = session.gasCap - gasSpent;
        if (gasCost > remaining) revert GasBudgetExceeded(gasCost, remaining);
        // Cannot truncate: gasCost <= gasCap - gasSpent < 2^96.
        // forge-lint: disable-next-line(unsafe-typecast)
        session.gasSpent = gasSpent + uint96(gasCost);
        session.opsUsed = opsUsed + 1;
    }

    /// @dev Checks every call of `callData` (the account's `execute` or `executeBatch`) against the
    /// permissions of `epoch` and counts token amounts; returns the operation's total native value,
    /// kept within `remaining`.
    function _checkCalls(bytes calldata callData, address account, address key, uint32 epoch, uint256 remaining)
        private
        returns (uint256 total)
    {
        bytes4 selector = callData.length >= 4 ? bytes4(callData[:4]) : bytes4(0);
        if (selector == IAgentAccount.execute.selector) {
            (address target, uint256 value, bytes memory data) = abi.decode(callData[4:], (address, uint256, bytes));
            _checkCall(target, data, account, key, epoch);
            if (value > remaining) revert SpendCapExceeded(value, remaining);
            return value;
        }
        if (selector == IAgentAccount.executeBatch.selector) {
            Call[] memory calls = abi.decode(callData[4:], (Call[]));
            for (uint256 i; i < calls.length; ++i) {
                _checkCall(calls[i].target, calls[i].data, account, key, epoch);
                uint256 value = calls[i].value;
                if (value > remaining) revert SpendCapExceeded(value, remaining);
                remaining -= value;
                total += value;
            }
            return total;
        }
        revert UnsupportedCall(selector);
    }

    /// @dev Module path: checks every call of `callData`, an ERC-7579 `execute(mode, executionCalldata)`,
    /// like {_checkCalls}. Only the canonical encoding (the bytes at offset 0x40) and a mode that is a
    /// single or batch call type with every other byte zero (default exec type, no selector, no payload)
    /// are accepted; the executions are decoded by `ERC7579Utils`, as `AccountERC7579` decodes them.
    function _check7579Calls(bytes calldata callData, address account, address key, uint32 epoch, uint256 remaining)
        private
        returns (uint256)
    {
        (bytes32 mode, bytes calldata executions) = _executionOf(callData);
        // Everything after the call type (exec type, unused bytes, selector, payload) must be zero.
        if (uint256(mode) << 8 != 0) revert UnsupportedExecutionMode(mode);
        CallType callType = CallType.wrap(mode[0]);
        if (callType == ERC7579Utils.CALLTYPE_SINGLE) {
            if (executions.length < 52) revert MalformedExecution();
            (address target, uint256 value, bytes calldata data) = ERC7579Utils.decodeSingle(executions);
            _check7579Call(target, data, account, key, epoch);
            if (value > remaining) revert SpendCapExceeded(value, remaining);
            return value;
        }
        if (callType == ERC7579Utils.CALLTYPE_BATCH) {
            return _check7579Batch(ERC7579Utils.decodeBatch(executions), account, key, epoch, remaining);
        }
        revert UnsupportedExecutionMode(mode);
    }

    /// @dev The mode and execution calldata of an ERC-7579 `execute(bytes32 mode, bytes executionCalldata)`
    /// call, canonically encoded (the bytes at offset 0x40, within the calldata); refuses any other call.
    function _executionOf(bytes calldata callData) private pure returns (bytes32 mode, bytes calldata executions) {
        bytes4 selector = callData.length >= 4 ? bytes4(callData[:4]) : bytes4(0);
        if (selector != IERC7579Execution.execute.selector) revert UnsupportedCall(selector);
        if (callData.length < EXECUTE_HEAD || uint256(bytes32(callData[36:68])) != 0x40) revert MalformedExecution();
        mode = bytes32(callData[4:36]);
        uint256 length = uint256(bytes32(callData[68:EXECUTE_HEAD]));
        if (length > callData.length - EXECUTE_HEAD) revert MalformedExecution();
        executions = callData[EXECUTE_HEAD:EXECUTE_HEAD + length];
    }

    /// @dev Module path: the calls of a batch, as {_checkCalls} checks `executeBatch`.
    function _check7579Batch(Execution[] calldata batch, address account, address key, uint32 epoch, uint256 remaining)
        private
        returns (uint256 total)
    {
        for (uint256 i; i < batch.length; ++i) {
            _check7579Call(batch[i].target, batch[i].callData, account, key, epoch);
            uint256 value = batch[i].value;
            if (value > remaining) revert SpendCapExceeded(value, remaining);
            remaining -= value;
            total += value;
        }
    }

    /// @dev Module path: {_checkCall}, and never address 0, which `AccountERC7579` calls as itself.
    function _check7579Call(address target, bytes memory data, address account, address key, uint32 epoch) private {
        if (target == address(0)) revert ForbiddenTarget(target);
        _checkCall(target, data, account, key, epoch);
    }

    /// @dev Reverts unless the session of `epoch` may make this call; counts a capped token's amount.
    function _checkCall(address target, bytes memory data, address account, address key, uint32 epoch) private {
        if (target == account || target == address(this)) revert ForbiddenTarget(target);
        Permission storage p = _permissions[target][key][epoch][account];
        if (!p.allowed) revert TargetNotAllowed(target);
        if (data.length == 0) return; // a plain transfer
        // The first four bytes (zero-padded when shorter): the function selector.
        // forge-lint: disable-next-line(unsafe-typecast)
        bytes4 selector = bytes4(data);
        if (p.isToken && _countTokenCall(p, target, selector, data, account, key)) return;
        if (p.anySelector) return;
        if (data.length < 4 || !_selectors[target][selector][key][epoch][account]) {
            revert SelectorNotAllowed(target, selector);
        }
    }

    /// @dev For a capped token: counts `transfer`, `approve`, `increaseAllowance` and
    /// `transferFrom(account, …)` against the cap and returns true; returns false for any other call
    /// (which then needs its selector listed).
    function _countTokenCall(
        Permission storage p,
        address token,
        bytes4 selector,
        bytes memory data,
        address account,
        address key
    ) private returns (bool) {
        uint256 amount;
        if (selector == TRANSFER || selector == APPROVE || selector == INCREASE_ALLOWANCE) {
            if (data.length < 68) revert MalformedTokenCall(token, selector);
            amount = _word(data, 36);
        } else if (selector == TRANSFER_FROM) {
            if (data.length < 100) revert MalformedTokenCall(token, selector);
            uint256 from = _word(data, 4);
            if (from >> 160 != 0) revert MalformedTokenCall(token, selector);
            // Cannot truncate: the upper 96 bits were checked to be zero.
            // forge-lint: disable-next-line(unsafe-typecast)
            if (address(uint160(from)) != account) return false;
            amount = _word(data, 68);
        } else {
            return false;
        }
        uint112 spent = p.tokenSpent;
        uint256 remaining = p.tokenCap - spent;
        if (amount > remaining) revert TokenCapExceeded(token, amount, remaining);
        // Cannot truncate: amount <= tokenCap - spent < 2^112.
        // forge-lint: disable-next-line(unsafe-typecast)
        uint112 total = spent + uint112(amount);
        p.tokenSpent = total;
        emit TokenSpent(account, key, token, amount, total);
        return true;
    }

    /// @dev The 32-byte word of `data` at byte `offset` (the caller checks the length).
    function _word(bytes memory data, uint256 offset) private pure returns (uint256 word) {
        assembly ("memory-safe") {
            word := mload(add(add(data, 0x20), offset))
        }
    }
}
