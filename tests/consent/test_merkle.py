"""RFC 6962/9162 Merkle hashing and proofs against published vectors, corruptions and fuzzing.

The vectors are the RFC 6962 test data published with transparency-dev/merkle
(proof/verify_test.go and testonly/constants.go), the reference Go implementation.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    ProofError,
    hash_children,
    hash_leaf,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = [
    bytes.fromhex(h)
    for h in [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]


def h(hexes: list[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in hexes]


# (leaf index (0-based), tree size, audit path)
INCLUSION = [
    (
        0,
        8,
        h(
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]
        ),
    ),
    (
        5,
        8,
        h(
            [
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]
        ),
    ),
    (2, 3, h(["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"])),
    (
        1,
        5,
        h(
            [
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ]
        ),
    ),
]
CONSISTENCY = [
    (
        1,
        8,
        h(
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]
        ),
    ),
    (
        6,
        8,
        h(
            [
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]
        ),
    ),
    (
        2,
        5,
        h(
            [
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ]
        ),
    ),
    (
        6,
        7,
        h(
            [
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]
        ),
    ),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")

TREE = MerkleTree(hash_leaf(leaf) for leaf in LEAVES)


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH straight from the RFC's recursive definition, independent of MerkleTree."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(
        b"\x01" + reference_root(leaves[:k]) + reference_root(leaves[k:])
    ).digest()


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert (
        MerkleTree().root()
        == EMPTY_ROOT
        == bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    )


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_for_sizes_1_to_8_match_published_vectors(size: int) -> None:
    assert TREE.root(size) == ROOTS[size - 1]
    assert reference_root(LEAVES[:size]) == ROOTS[size - 1]


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    assert hash_leaf(b"") == bytes.fromhex(
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert (
        hash_children(b"a" * 32, b"b" * 32)
        == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )
    assert hash_leaf(b"\x01" + b"a" * 32 + b"b" * 32) != hash_children(b"a" * 32, b"b" * 32)


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_published_inclusion_proofs_are_generated_and_verify(
    index: int, size: int, path: list[bytes]
) -> None:
    assert TREE.inclusion_proof(index, size) == path
    verify_inclusion(
        index=index, size=size, leaf_hash=hash_leaf(LEAVES[index]), proof=path, root=ROOTS[size - 1]
    )


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_published_consistency_proofs_are_generated_and_verify(
    old: int, new: int, path: list[bytes]
) -> None:
    assert TREE.consistency_proof(old, new) == path
    verify_consistency(
        old_size=old, new_size=new, old_root=ROOTS[old - 1], new_root=ROOTS[new - 1], proof=path
    )


def flip_bit(proof: list[bytes], position: int) -> list[bytes]:
    corrupted = list(proof)
    corrupted[position] = bytes([corrupted[position][0] ^ 8]) + corrupted[position][1:]
    return corrupted


def inclusion_corruptions(index: int, size: int, path: list[bytes], root: bytes, leaf: bytes):
    yield "index - 1", dict(index=index - 1, size=size, leaf_hash=leaf, proof=path, root=root)
    yield "index + 1", dict(index=index + 1, size=size, leaf_hash=leaf, proof=path, root=root)
    yield "index ^ 2", dict(index=index ^ 2, size=size, leaf_hash=leaf, proof=path, root=root)
    yield "size * 2", dict(index=index, size=size * 2, leaf_hash=leaf, proof=path, root=root)
    yield "size / 2", dict(index=index, size=size // 2, leaf_hash=leaf, proof=path, root=root)
    yield "wrong leaf", dict(index=index, size=size, leaf_hash=SOME_HASH, proof=path, root=root)
    yield "empty root", dict(index=index, size=size, leaf_hash=leaf, proof=path, root=EMPTY_ROOT)
    yield "random root", dict(index=index, size=size, leaf_hash=leaf, proof=path, root=SOME_HASH)
    yield "leaf as root", dict(index=index, size=size, leaf_hash=root, proof=path, root=leaf)
    yield (
        "extended by root",
        dict(index=index, size=size, leaf_hash=leaf, proof=[*path, root], root=root),
    )
    yield (
        "extended by garbage",
        dict(index=index, size=size, leaf_hash=leaf, proof=[*path, b""], root=root),
    )
    yield (
        "prefixed by root",
        dict(index=index, size=size, leaf_hash=leaf, proof=[root, *path], root=root),
    )
    if path:
        yield "truncated", dict(index=index, size=size, leaf_hash=leaf, proof=path[:-1], root=root)
        yield (
            "first element dropped",
            dict(index=index, size=size, leaf_hash=leaf, proof=path[1:], root=root),
        )
    if len(path) > 1:
        yield (
            "inserted element",
            dict(
                index=index,
                size=size,
                leaf_hash=leaf,
                proof=[path[0], SOME_HASH, *path[1:]],
                root=root,
            ),
        )
    for i in range(len(path)):
        yield (
            f"bit flipped in element {i}",
            dict(index=index, size=size, leaf_hash=leaf, proof=flip_bit(path, i), root=root),
        )


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_every_corrupted_inclusion_proof_is_rejected(
    index: int, size: int, path: list[bytes]
) -> None:
    accepted = []
    for name, args in inclusion_corruptions(
        index, size, path, ROOTS[size - 1], hash_leaf(LEAVES[index])
    ):
        try:
            verify_inclusion(**args)
            accepted.append(name)
        except ProofError:
            pass
    assert accepted == []


def consistency_corruptions(old: int, new: int, path: list[bytes], r1: bytes, r2: bytes):
    yield "old - 1", dict(old_size=old - 1, new_size=new, old_root=r1, new_root=r2, proof=path)
    yield "old + 1", dict(old_size=old + 1, new_size=new, old_root=r1, new_root=r2, proof=path)
    yield "old ^ 2", dict(old_size=old ^ 2, new_size=new, old_root=r1, new_root=r2, proof=path)
    yield "new * 2", dict(old_size=old, new_size=new * 2, old_root=r1, new_root=r2, proof=path)
    yield "new / 2", dict(old_size=old, new_size=new // 2, old_root=r1, new_root=r2, proof=path)
    yield "roots swapped", dict(old_size=old, new_size=new, old_root=r2, new_root=r1, proof=path)
    yield (
        "wrong old root",
        dict(old_size=old, new_size=new, old_root=SOME_HASH, new_root=r2, proof=path),
    )
    yield (
        "wrong new root",
        dict(old_size=old, new_size=new, old_root=r1, new_root=SOME_HASH, proof=path),
    )
    yield "empty proof", dict(old_size=old, new_size=new, old_root=r1, new_root=r2, proof=[])
    yield "truncated", dict(old_size=old, new_size=new, old_root=r1, new_root=r2, proof=path[:-1])
    yield (
        "extended by old root",
        dict(old_size=old, new_size=new, old_root=r1, new_root=r2, proof=[*path, r1]),
    )
    yield (
        "extended by new root",
        dict(old_size=old, new_size=new, old_root=r1, new_root=r2, proof=[*path, r2]),
    )
    yield (
        "prefixed by old root",
        dict(old_size=old, new_size=new, old_root=r1, new_root=r2, proof=[r1, *path]),
    )
    yield (
        "prefixed by element 0",
        dict(old_size=old, new_size=new, old_root=r1, new_root=r2, proof=[path[0], *path]),
    )
    yield (
        "garbage element",
        dict(old_size=old, new_size=new, old_root=r1, new_root=r2, proof=[*path, b"x"]),
    )
    for i in range(len(path)):
        yield (
            f"bit flipped in element {i}",
            dict(old_size=old, new_size=new, old_root=r1, new_root=r2, proof=flip_bit(path, i)),
        )


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_every_corrupted_consistency_proof_is_rejected(
    old: int, new: int, path: list[bytes]
) -> None:
    accepted = []
    for name, args in consistency_corruptions(old, new, path, ROOTS[old - 1], ROOTS[new - 1]):
        try:
            verify_consistency(**args)
            accepted.append(name)
        except ProofError:
            pass
    assert accepted == []


def test_trivial_consistency_cases_follow_rfc_9162() -> None:
    a, b = ROOTS[0], ROOTS[1]
    verify_consistency(old_size=0, new_size=0, old_root=EMPTY_ROOT, new_root=EMPTY_ROOT, proof=[])
    verify_consistency(old_size=0, new_size=5, old_root=EMPTY_ROOT, new_root=b, proof=[])
    verify_consistency(old_size=3, new_size=3, old_root=a, new_root=a, proof=[])
    with pytest.raises(ProofError, match="forked"):
        verify_consistency(old_size=3, new_size=3, old_root=a, new_root=b, proof=[])
    with pytest.raises(ProofError):
        verify_consistency(old_size=3, new_size=3, old_root=a, new_root=a, proof=[a])
    with pytest.raises(ProofError):
        verify_consistency(old_size=2, new_size=1, old_root=a, new_root=b, proof=[])


def test_single_leaf_tree_has_its_leaf_as_root_and_an_empty_path() -> None:
    leaf = hash_leaf(b"data")
    verify_inclusion(index=0, size=1, leaf_hash=leaf, proof=[], root=leaf)
    with pytest.raises(ProofError):
        verify_inclusion(index=0, size=1, leaf_hash=leaf, proof=[], root=b"")
    with pytest.raises(ProofError):
        verify_inclusion(index=1, size=1, leaf_hash=leaf, proof=[], root=leaf)
    with pytest.raises(ProofError):
        verify_inclusion(index=0, size=0, leaf_hash=leaf, proof=[], root=leaf)


def test_truncate_undoes_appends_exactly() -> None:
    tree = MerkleTree(hash_leaf(bytes([i])) for i in range(13))
    roots = [tree.root(n) for n in range(14)]
    for i in range(13, 40):
        tree.append(hash_leaf(bytes([i])))
    tree.truncate(13)
    assert tree.size == 13 and [tree.root(n) for n in range(14)] == roots
    tree.append(hash_leaf(bytes([13])))
    assert tree.root() == reference_root([bytes([i]) for i in range(14)])


@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, 300), data=st.data())
def test_every_inclusion_proof_of_a_random_tree_verifies(size: int, data: st.DataObject) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(size)]
    tree = MerkleTree(hash_leaf(leaf) for leaf in leaves)
    assert tree.root() == reference_root(leaves)
    index = data.draw(st.integers(0, size - 1))
    at = data.draw(st.integers(index + 1, size))
    proof = tree.inclusion_proof(index, at)
    verify_inclusion(
        index=index,
        size=at,
        leaf_hash=hash_leaf(leaves[index]),
        proof=proof,
        root=reference_root(leaves[:at]),
    )
    if proof:
        with pytest.raises(ProofError):
            verify_inclusion(
                index=index,
                size=at,
                leaf_hash=hash_leaf(leaves[index]),
                proof=flip_bit(proof, data.draw(st.integers(0, len(proof) - 1))),
                root=reference_root(leaves[:at]),
            )


@settings(max_examples=150, deadline=None)
@given(new=st.integers(0, 300), data=st.data())
def test_every_consistency_proof_of_a_random_tree_verifies(new: int, data: st.DataObject) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(new)]
    tree = MerkleTree(hash_leaf(leaf) for leaf in leaves)
    old = data.draw(st.integers(0, new))
    proof = tree.consistency_proof(old, new)
    verify_consistency(
        old_size=old,
        new_size=new,
        old_root=reference_root(leaves[:old]),
        new_root=reference_root(leaves),
        proof=proof,
    )
    if proof:
        with pytest.raises(ProofError):
            verify_consistency(
                old_size=old,
                new_size=new,
                old_root=reference_root(leaves[:old]),
                new_root=reference_root(leaves),
                proof=flip_bit(proof, data.draw(st.integers(0, len(proof) - 1))),
            )
