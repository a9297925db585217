// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";

/// @title ConsentRegistry
/// @notice Patient-controlled access grants. A grant or a revocation takes
///         effect only with the patient's EIP-712 signature; any account (in
///         practice the consent service) may relay the signed message and pay
///         the gas. Nothing identifying health is stored: addresses, category
///         bits, purpose ids and times only.
/// @dev Encodings (see contracts/README.md):
///      categories is a bitmask: LABS=1, IMAGING=2, MEDICATIONS=4, NOTES=8,
///      MENTAL_HEALTH=16; purpose is one id: TREATMENT=1, PAYMENT=2,
///      OPERATIONS=3, RESEARCH=4, EMERGENCY=5. One grant is kept per
///      (patient, grantee, purpose); a new grant replaces it. Nonces are per
///      patient and sequential: a message must carry `nonces(patient)`. A grant
///      ends at most MAX_GRANT_HORIZON seconds after the block that records it,
///      so every time the registry emits fits the 64-bit signed integers of the
///      services' databases (the consent service refuses the same before relaying).
///      The EIP-712 domain, the signature recovery and the nonces are
///      OpenZeppelin's (EIP712, ECDSA, Nonces); the registry has no roles.
contract ConsentRegistry is EIP712, Nonces {
    /// @notice One grant: the granted category bits and the time it ends.
    struct Grant {
        uint32 categories;
        uint64 expiresAt;
    }

    /// @notice Bits of every defined category.
    uint32 public constant ALL_CATEGORIES = 0x1F;
    /// @notice Highest defined purpose id (ids run from 1 to MAX_PURPOSE).
    uint8 public constant MAX_PURPOSE = 5;
    /// @notice Longest a grant may run, in seconds: ten years of 365.25 days
    ///         (315,576,000 s). The consent service uses the same constant
    ///         (services/consent/domain/model.py, MAX_GRANT_HORIZON_SECONDS).
    uint64 public constant MAX_GRANT_HORIZON = 315_576_000;

    /// @notice EIP-712 type of a grant message.
    bytes32 public constant GRANT_TYPEHASH = keccak256(
        "Grant(address patient,address grantee,uint32 categories,uint8 purpose,uint64 expiresAt,uint256 nonce,uint256 deadline)"
    );
    /// @notice EIP-712 type of a revocation message.
    bytes32 public constant REVOKE_TYPEHASH = keccak256(
        "Revoke(address patient,address grantee,uint32 categories,uint8 purpose,uint256 nonce,uint256 deadline)"
    );

    /// @notice The patient or the grantee is the zero address.
    error ConsentRegistry__ZeroAddress();
    /// @notice The category mask is empty or has undefined bits.
    error ConsentRegistry__InvalidCategories(uint32 categories);
    /// @notice The purpose id is not one of the defined purposes.
    error ConsentRegistry__InvalidPurpose(uint8 purpose);
    /// @notice The grant would already be over when it is recorded.
    error ConsentRegistry__InvalidExpiry(uint64 expiresAt, uint256 nowTime);
    /// @notice The grant would run longer than MAX_GRANT_HORIZON from now;
    ///         `latest` is the last expiry accepted in this block.
    error ConsentRegistry__ExpiryTooFar(uint64 expiresAt, uint256 latest);
    /// @notice The signed message's deadline has passed.
    error ConsentRegistry__SignatureExpired(uint256 deadline, uint256 nowTime);
    /// @notice The message's nonce is not the patient's next nonce (replay or gap).
    error ConsentRegistry__InvalidNonce(address patient, uint256 expected, uint256 given);
    /// @notice The signature is not 65 bytes, has a non-canonical s or v, or
    ///         recovers no signer at all (ECDSA.tryRecover reported an error).
    error ConsentRegistry__MalformedSignature();
    /// @notice The signature was made by someone other than the patient, or for
    ///         another chain, contract or message (all of which recover another signer).
    error ConsentRegistry__WrongSigner(address recovered, address patient);

    /// @notice Emitted after a grant is recorded (replacing any earlier one for
    ///         the same patient, grantee and purpose).
    event ConsentGranted(
        address indexed patient,
        address indexed grantee,
        uint8 indexed purpose,
        uint32 categories,
        uint64 expiresAt,
        uint256 nonce
    );
    /// @notice Emitted after categories are revoked; `remaining` is what is left.
    event ConsentRevoked(
        address indexed patient,
        address indexed grantee,
        uint8 indexed purpose,
        uint32 categories,
        uint32 remaining,
        uint256 nonce
    );

    mapping(address patient => mapping(address grantee => mapping(uint8 purpose => Grant)))
        private _grants;

    /// @dev Domain `name = "EHR Ledger ConsentRegistry"`, `version = "1"`: the
    ///      SDK and the consent service sign with exactly these.
    constructor() EIP712("EHR Ledger ConsentRegistry", "1") {}

    /// @notice Records a grant signed by the patient. Any account may relay it.
    /// @param patient The patient whose records are shared; must be the signer.
    /// @param grantee The account receiving access.
    /// @param categories Bitmask of record categories (see the contract notes).
    /// @param purpose Purpose-of-use id (1..MAX_PURPOSE).
    /// @param expiresAt Time (unix seconds) at which the grant stops authorising;
    ///        after now and at most MAX_GRANT_HORIZON seconds after it.
    /// @param nonce The patient's next nonce (`nonces(patient)`).
    /// @param deadline Time after which the signed message is no longer accepted.
    /// @param signature The patient's 65-byte EIP-712 signature (r, s, v) of `Grant`.
    function grant(
        address patient,
        address grantee,
        uint32 categories,
        uint8 purpose,
        uint64 expiresAt,
        uint256 nonce,
        uint256 deadline,
        bytes calldata signature
    ) external {
        _checkScope(patient, grantee, categories, purpose);
        if (expiresAt <= block.timestamp) {
            revert ConsentRegistry__InvalidExpiry(expiresAt, block.timestamp);
        }
        if (expiresAt > block.timestamp + MAX_GRANT_HORIZON) {
            revert ConsentRegistry__ExpiryTooFar(expiresAt, block.timestamp + MAX_GRANT_HORIZON);
        }
        bytes32 structHash = keccak256(
            abi.encode(
                GRANT_TYPEHASH, patient, grantee, categories, purpose, expiresAt, nonce, deadline
            )
        );
        _consume(patient, nonce, deadline, structHash, signature);
        _grants[patient][grantee][purpose] = Grant(categories, expiresAt);
        emit ConsentGranted(patient, grantee, purpose, categories, expiresAt, nonce);
    }

    /// @notice Revokes categories of a grant, with the patient's signature. Any
    ///         account may relay it. Revoking categories that are not granted is
    ///         allowed (the nonce is consumed and the event emitted).
    /// @param patient The patient; must be the signer.
    /// @param grantee The account losing access.
    /// @param categories Bitmask of the categories to revoke.
    /// @param purpose Purpose-of-use id of the grant.
    /// @param nonce The patient's next nonce (`nonces(patient)`).
    /// @param deadline Time after which the signed message is no longer accepted.
    /// @param signature The patient's 65-byte EIP-712 signature (r, s, v) of `Revoke`.
    function revoke(
        address patient,
        address grantee,
        uint32 categories,
        uint8 purpose,
        uint256 nonce,
        uint256 deadline,
        bytes calldata signature
    ) external {
        _checkScope(patient, grantee, categories, purpose);
        bytes32 structHash = keccak256(
            abi.encode(REVOKE_TYPEHASH, patient, grantee, categories, purpose, nonce, deadline)
        );
        _consume(patient, nonce, deadline, structHash, signature);
        Grant storage entry = _grants[patient][grantee][purpose];
        uint32 remaining = entry.categories & ~categories;
        if (remaining == 0) {
            delete _grants[patient][grantee][purpose];
        } else {
            entry.categories = remaining;
        }
        emit ConsentRevoked(patient, grantee, purpose, categories, remaining, nonce);
    }

    /// @notice Whether `grantee` may read `patient`'s records of `category` for
    ///         `purpose` now: a grant covers every bit of `category` and has not expired.
    /// @param patient The patient.
    /// @param grantee The reader.
    /// @param category One category bit (or several: all must be granted).
    /// @param purpose Purpose-of-use id.
    /// @return True when an unexpired grant covers the request.
    function isAuthorised(address patient, address grantee, uint32 category, uint8 purpose)
        external
        view
        returns (bool)
    {
        if (category == 0) return false;
        Grant memory entry = _grants[patient][grantee][purpose];
        return entry.categories & category == category && block.timestamp < entry.expiresAt;
    }

    /// @notice The stored grant for (patient, grantee, purpose); zero when none.
    /// @param patient The patient.
    /// @param grantee The grantee.
    /// @param purpose Purpose-of-use id.
    /// @return The grant, which may have expired.
    function getGrant(address patient, address grantee, uint8 purpose)
        external
        view
        returns (Grant memory)
    {
        return _grants[patient][grantee][purpose];
    }

    /// @notice The EIP-712 domain separator for this chain and contract. The
    ///         nonce a patient's next message must carry is `nonces(patient)`.
    /// @return The separator.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    function _checkScope(address patient, address grantee, uint32 categories, uint8 purpose)
        private
        pure
    {
        if (patient == address(0) || grantee == address(0)) revert ConsentRegistry__ZeroAddress();
        if (categories == 0 || categories & ~ALL_CATEGORIES != 0) {
            revert ConsentRegistry__InvalidCategories(categories);
        }
        if (purpose == 0 || purpose > MAX_PURPOSE) revert ConsentRegistry__InvalidPurpose(purpose);
    }

    /// @dev Checks deadline, nonce and signature; the nonce is consumed first and
    ///      the consumption undone by any refusal (the whole call reverts).
    function _consume(
        address patient,
        uint256 nonce,
        uint256 deadline,
        bytes32 structHash,
        bytes calldata signature
    ) private {
        if (block.timestamp > deadline) {
            revert ConsentRegistry__SignatureExpired(deadline, block.timestamp);
        }
        // Nonces' own check (`_useCheckedNonce`) would refuse with
        // InvalidAccountNonce(account, current); this keeps the registry's error,
        // which also names the nonce given.
        uint256 expected = _useNonce(patient);
        if (nonce != expected) revert ConsentRegistry__InvalidNonce(patient, expected, nonce);
        (address recovered, ECDSA.RecoverError failure,) =
            ECDSA.tryRecover(_hashTypedDataV4(structHash), signature);
        if (failure != ECDSA.RecoverError.NoError) revert ConsentRegistry__MalformedSignature();
        if (recovered != patient) revert ConsentRegistry__WrongSigner(recovered, patient);
    }
}
