"""RFC 9162 Merkle tree hashing, proofs and their verification, with no I/O.

One implementation shared by the consent service (which builds proofs), the audit
command (which recomputes roots) and the device SDK (which verifies receipts).
Indices start at 0. Verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2.

>>> leaf = hash_leaf(b"hello")
>>> tree = MerkleTree([leaf, hash_leaf(b"world")])
>>> verify_inclusion(index=0, size=2, leaf_hash=leaf, proof=tree.inclusion_proof(0, 2),
...                  root=tree.root(2))
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleTree",
    "ProofError",
    "hash_children",
    "hash_leaf",
    "root_from_inclusion_proof",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof did not verify, or its parameters are impossible."""


def hash_leaf(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the domain-separated leaf hash."""
    return hashlib.sha256(b"\x00" + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the domain-separated interior node hash."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162: the largest power of two strictly smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only tree that keeps every complete subtree hash in memory.

    ``levels[h][i]`` is the hash of the perfect subtree of ``2**h`` leaves starting at
    leaf ``i * 2**h``. Appending is amortised O(1); any root or proof of any earlier
    size is O(log n) lookups, so a log of a few million entries costs ~64 bytes each.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [[]]
        for leaf_hash in leaf_hashes:
            self.append(leaf_hash)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append(self, leaf_hash: bytes) -> int:
        """Add a leaf hash and return its index."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"a leaf hash has {HASH_SIZE} bytes, got {len(leaf_hash)}")
        index = len(self.levels[0])
        self.levels[0].append(leaf_hash)
        level, position = 0, index
        while position % 2 == 1:  # a right child completes its parent
            parent = hash_children(self.levels[level][position - 1], self.levels[level][position])
            level += 1
            if len(self.levels) == level:
                self.levels.append([])
            self.levels[level].append(parent)
            position //= 2
        return index

    def truncate(self, size: int) -> None:
        """Forget every leaf from ``size`` on (used to undo a failed append)."""
        self._check_size(size)
        for height, level in enumerate(self.levels):
            del level[size >> height :]

    def leaf_hash(self, index: int) -> bytes:
        return self.levels[0][index]

    def _subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]); ``start`` is always aligned as the RFC's recursion visits it."""
        n = end - start
        if n & (n - 1) == 0:  # a perfect, aligned subtree is stored
            height = n.bit_length() - 1
            return self.levels[height][start >> height]
        k = _largest_power_of_two_below(n)
        return hash_children(self._subtree(start, start + k), self._subtree(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (the whole tree by default)."""
        size = self.size if size is None else size
        self._check_size(size)
        return EMPTY_ROOT if size == 0 else self._subtree(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 9162 2.1.3.1."""
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"index {index} is not in a tree of size {size}")
        proof: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = _largest_power_of_two_below(end - start)
            if index < start + k:
                proof.append(self._subtree(start + k, end))
                end = start + k
            else:
                proof.append(self._subtree(start, start + k))
                start += k
        proof.reverse()
        return proof

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """PROOF(old, D[0:new]) of RFC 9162 2.1.4.1."""
        self._check_size(new)
        if not 0 <= old <= new:
            raise ValueError(f"old size {old} must be between 0 and the new size {new}")
        if old in (0, new):
            return []
        proof: list[bytes] = []
        start, end, m, complete = 0, new, old, True  # SUBPROOF(m, D[start:end], complete)
        while m != end - start:
            k = _largest_power_of_two_below(end - start)
            if m <= k:
                proof.append(self._subtree(start + k, end))
                end = start + k
            else:
                proof.append(self._subtree(start, start + k))
                start, m, complete = start + k, m - k, False
        if not complete:
            proof.append(self._subtree(start, end))
        proof.reverse()
        return proof

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} is beyond the log's size {self.size}")


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} has {len(value)} bytes, a hash has {HASH_SIZE}")


def root_from_inclusion_proof(
    *, index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root an inclusion proof implies (RFC 9162 2.1.3.2, steps 1-5)."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not in a tree of size {size}")
    _check_hash("the leaf hash", leaf_hash)
    fn, sn = index, size - 1
    r = leaf_hash
    for position, p in enumerate(proof):
        _check_hash(f"inclusion proof element {position}", p)
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the tree is deep")
        if fn % 2 == 1 or fn == sn:
            r = hash_children(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(
    *, index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise :class:`ProofError` unless ``leaf_hash`` is at ``index`` in the tree ``root``."""
    _check_hash("the root", root)
    computed = root_from_inclusion_proof(index=index, size=size, leaf_hash=leaf_hash, proof=proof)
    if not hmac.compare_digest(computed, root):
        raise ProofError(f"the inclusion proof for index {index} does not lead to the root")


def verify_consistency(
    *, old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise :class:`ProofError` unless tree ``new_root`` extends tree ``old_root``.

    RFC 9162 2.1.4.2; sizes 0 and equal sizes need an empty proof (and equal roots).
    """
    _check_hash("the old root", old_root)
    _check_hash("the new root", new_root)
    for position, p in enumerate(proof):
        _check_hash(f"consistency proof element {position}", p)
    if not 0 <= old_size <= new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == new_size:
        if proof:
            raise ProofError("equal sizes need an empty consistency proof")
        if not hmac.compare_digest(old_root, new_root):
            raise ProofError("equal sizes but different roots: the log forked")
        return
    if old_size == 0:
        if proof:
            raise ProofError("an empty old tree needs an empty consistency proof")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # step 2: old tree is a perfect subtree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn % 2 == 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is longer than the tree is deep")
        if fn % 2 == 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is shorter than the tree is deep")
    if not hmac.compare_digest(fr, old_root):
        raise ProofError(f"the consistency proof does not lead to the old root (size {old_size})")
    if not hmac.compare_digest(sr, new_root):
        raise ProofError(f"the consistency proof does not lead to the new root (size {new_size})")
