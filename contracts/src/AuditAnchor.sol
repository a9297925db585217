// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title AuditAnchor
/// @notice Append-only checkpoints (tree size, root) of the audit log's
///         RFC 9162 Merkle tree (SHA-256, leaf prefix 0x00, node prefix 0x01).
///         A new checkpoint is accepted only with a valid consistency proof from
///         the latest one, so the chain itself refuses any rewrite of history.
/// @dev Roles (OpenZeppelin AccessControl): DEFAULT_ADMIN_ROLE grants and
///      revokes every role and holds no other right; RELAY_ROLE submits
///      checkpoints. A caller without the role needed is refused with
///      `AccessControlUnauthorizedAccount(account, neededRole)`.
contract AuditAnchor is AccessControl {
    /// @notice One anchored checkpoint. The block time it was anchored at is in
    ///         its `CheckpointAnchored` event (and its block), not in storage.
    /// @param treeSize Number of leaves in the tree.
    /// @param root RFC 9162 root hash of the first `treeSize` leaves.
    struct Checkpoint {
        uint64 treeSize;
        bytes32 root;
    }

    /// @notice Role allowed to submit checkpoints.
    bytes32 public constant RELAY_ROLE = keccak256("RELAY_ROLE");

    /// @notice The zero address was given where an account is required (the
    ///         first admin, or an account receiving a role).
    error AuditAnchor__ZeroAddress();
    /// @notice A checkpoint of an empty tree was submitted.
    error AuditAnchor__EmptyTree();
    /// @notice The new tree is smaller than the latest anchored one.
    error AuditAnchor__TreeShrank(uint64 latestSize, uint64 newSize);
    /// @notice Same size as the latest checkpoint but a different root.
    error AuditAnchor__RootMismatch(uint64 treeSize, bytes32 latestRoot, bytes32 newRoot);
    /// @notice The consistency proof does not link the latest checkpoint to the new one.
    error AuditAnchor__InconsistentProof(uint64 latestSize, uint64 newSize);
    /// @notice No checkpoint exists at `index`.
    error AuditAnchor__NoCheckpoint(uint256 index);

    /// @notice Emitted after a checkpoint is appended.
    event CheckpointAnchored(
        uint256 indexed index, uint64 treeSize, bytes32 root, uint64 anchoredAt
    );

    /// @dev Tree size of checkpoint i; Solidity packs four to a storage slot, so
    ///      three checkpoints in four write no new slot for their size. The
    ///      array's length is the number of checkpoints.
    uint64[] private _sizes;
    /// @dev Root of checkpoint i: the one new storage slot every checkpoint needs.
    mapping(uint256 index => bytes32 root) private _roots;

    /// @param admin The first holder of DEFAULT_ADMIN_ROLE.
    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @dev Refuses a role for the zero address (a role nobody can use, most
    ///      likely a missing argument), then grants as AccessControl does.
    function _grantRole(bytes32 role, address account) internal override returns (bool) {
        if (account == address(0)) revert AuditAnchor__ZeroAddress();
        return super._grantRole(role, account);
    }

    /// @notice Appends checkpoint (`treeSize`, `root`); only the relay may call.
    ///         The first checkpoint needs no proof (its predecessor is the empty
    ///         tree). Later ones need the RFC 9162 consistency proof from the
    ///         latest checkpoint; a checkpoint of the same size must repeat its
    ///         root with an empty proof; a smaller size is refused.
    /// @param treeSize Number of leaves of the new tree.
    /// @param root Root hash of the new tree.
    /// @param proof Consistency proof from the latest checkpoint to the new one.
    /// @return index Position of the new checkpoint.
    function anchor(uint64 treeSize, bytes32 root, bytes32[] calldata proof)
        external
        onlyRole(RELAY_ROLE)
        returns (uint256 index)
    {
        if (treeSize == 0) revert AuditAnchor__EmptyTree();
        index = _sizes.length;
        if (index == 0) {
            if (proof.length != 0) revert AuditAnchor__InconsistentProof(0, treeSize);
        } else {
            uint64 latestSize = _sizes[index - 1];
            bytes32 latestRoot = _roots[index - 1];
            if (treeSize < latestSize) revert AuditAnchor__TreeShrank(latestSize, treeSize);
            if (treeSize == latestSize) {
                if (root != latestRoot) {
                    revert AuditAnchor__RootMismatch(treeSize, latestRoot, root);
                }
                if (proof.length != 0) revert AuditAnchor__InconsistentProof(latestSize, treeSize);
            } else if (!verifyConsistency(latestSize, treeSize, latestRoot, root, proof)) {
                revert AuditAnchor__InconsistentProof(latestSize, treeSize);
            }
        }
        _sizes.push(treeSize);
        _roots[index] = root;
        emit CheckpointAnchored(index, treeSize, root, uint64(block.timestamp));
    }

    /// @notice The latest checkpoint; reverts when none exists.
    /// @return The checkpoint.
    function latestCheckpoint() external view returns (Checkpoint memory) {
        uint256 count = _sizes.length;
        if (count == 0) revert AuditAnchor__NoCheckpoint(0);
        return Checkpoint(_sizes[count - 1], _roots[count - 1]);
    }

    /// @notice The checkpoint at `index` (0 is the first ever anchored).
    /// @param index Position of the checkpoint.
    /// @return The checkpoint.
    function checkpointAt(uint256 index) external view returns (Checkpoint memory) {
        if (index >= _sizes.length) revert AuditAnchor__NoCheckpoint(index);
        return Checkpoint(_sizes[index], _roots[index]);
    }

    /// @notice Number of checkpoints anchored so far.
    /// @return The count.
    function checkpointCount() external view returns (uint256) {
        return _sizes.length;
    }

    /// @notice Verifies an RFC 9162 (section 2.1.4.2) consistency proof between a
    ///         tree of `first` leaves with root `firstRoot` and a tree of
    ///         `second` leaves with root `secondRoot`.
    /// @param first Size of the older tree (0 < first).
    /// @param second Size of the newer tree.
    /// @param firstRoot Root of the older tree.
    /// @param secondRoot Root of the newer tree.
    /// @param proof The consistency path.
    /// @return True when the proof is valid.
    function verifyConsistency(
        uint64 first,
        uint64 second,
        bytes32 firstRoot,
        bytes32 secondRoot,
        bytes32[] calldata proof
    ) public view returns (bool) {
        if (first == 0 || first > second) return false;
        if (first == second) return proof.length == 0 && firstRoot == secondRoot;
        if (proof.length == 0) return false;

        uint256 fn = first - 1;
        uint256 sn = second - 1;
        uint256 start;
        bytes32 fr;
        bytes32 sr;
        if (first & (first - 1) == 0) {
            // `first` is a power of two: its root is the implicit first path element.
            fr = firstRoot;
        } else {
            fr = proof[0];
            start = 1;
        }
        sr = fr;
        while (fn & 1 == 1) {
            fn >>= 1;
            sn >>= 1;
        }
        for (uint256 i = start; i < proof.length; ++i) {
            if (sn == 0) return false;
            bytes32 c = proof[i];
            if (fn & 1 == 1 || fn == sn) {
                fr = _node(c, fr);
                sr = _node(c, sr);
                while (fn & 1 == 0 && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
            } else {
                sr = _node(sr, c);
            }
            fn >>= 1;
            sn >>= 1;
        }
        return fr == firstRoot && sr == secondRoot && sn == 0;
    }

    /// @dev SHA-256(0x01 || left || right) through the precompile at 0x02.
    function _node(bytes32 left, bytes32 right) private view returns (bytes32 result) {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore8(ptr, 0x01)
            mstore(add(ptr, 1), left)
            mstore(add(ptr, 33), right)
            if iszero(staticcall(gas(), 0x02, ptr, 65, 0x00, 0x20)) { revert(0, 0) }
            result := mload(0x00)
        }
    }
}
