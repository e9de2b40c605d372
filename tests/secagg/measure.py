"""Per-device and server cost of one secure-aggregation round (prints; asserts nothing).

    python -m tests.secagg.measure [n ...]

Vector length 1441 (the model's size), 32-bit modulus, the planner's graph, 10% of the
devices dropping out after key sharing (so the server also rebuilds dropped keys).
CPU is process time; the harness's own record and wire conversions of each message
count as the device's or server's, session state is saved and restored at every stage.

The round is the first of its run: every device verifies every neighbour's run
attestation. A last line gives the share-keys stage of a second round over the same
ring, where each device has verified them all already
(:class:`client_sdk.secagg.VerifiedAttestations`): the most that remembering them saves
(with a new random ring each round, a device meets about ``1 - (1 - d / (n - 1))**r``
of its neighbours again after ``r`` rounds).

Then the primitives each neighbour costs, in microseconds, and the floor they set: a
device verifies one Ed25519 signature per neighbour (its round keys) and makes two X25519
agreements (SecAgg+'s two key pairs) and one mask expansion, whatever else is saved.
"""

from __future__ import annotations

import secrets
import statistics
import sys
import time
from collections.abc import Callable

from client_sdk.keys import DeviceKey
from client_sdk.secagg import (
    KeyPair,
    VerifiedAttestations,
    decrypt_shares,
    encrypt_shares,
    expand,
    share_key,
    sign_advertisement,
    split_secret,
    verify_advertisement,
)
from server.secagg import choose_graph
from tests.secagg.harness import STAGES, Federation, drop_some, random_vectors

LENGTH = 1441
BITS = 32


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"{1e3 * statistics.median(ordered):6.1f} (p95 {1e3 * p95:6.1f})"


def measure(n: int) -> None:
    fed = Federation(n, vector_length=LENGTH, modulus_bits=BITS, seed=n)
    vectors = random_vectors(fed.devices, length=LENGTH, modulus_bits=BITS, seed=n)
    params = fed.params()
    dropped = drop_some(fed.devices, 0.1, seed=n)
    verified = {node: VerifiedAttestations(run_id=fed.run_id) for node in fed.devices}
    wall = time.perf_counter()
    outcome = fed.run(vectors, params=params, drop={"masked-input": dropped}, verified=verified)
    wall = time.perf_counter() - wall
    assert outcome.total is not None, outcome.aborted
    print(
        f"n={n}: degree {params.degree} ({'complete' if params.is_complete else 'Harary'}), "
        f"t={params.threshold}, min_survivors={params.min_survivors}, "
        f"{len(dropped)} dropped after sharing; wall {wall:.1f} s for the whole simulation"
    )
    totals: dict[int, float] = {}
    for stage in STAGES:
        times = outcome.device_cpu[stage]
        for node, spent in times.items():
            totals[node] = totals.get(node, 0.0) + spent
        print(f"  device CPU ms, {stage:13s} median {_ms(list(times.values()))}")
    print(f"  device CPU ms, {'all stages':13s} median {_ms(list(totals.values()))}")
    ups, downs = list(outcome.bytes_up.values()), list(outcome.bytes_down.values())
    print(
        f"  device bytes: up median {statistics.median(ups) / 1024:.1f} KiB "
        f"(max {max(ups) / 1024:.1f}), down median {statistics.median(downs) / 1024:.1f} KiB "
        f"(max {max(downs) / 1024:.1f})"
    )
    stages = ", ".join(f"{k} {v:.2f}" for k, v in outcome.server_cpu_by_stage.items())
    print(f"  server CPU s: total {outcome.server_cpu:.2f} ({stages})")
    again = fed.run(vectors, params=fed.params(label="train/2"), verified=verified)
    assert again.total is not None, again.aborted
    print(
        f"  round 2, attestations already verified: device CPU ms, share-keys median "
        f"{_ms(list(again.device_cpu['share-keys'].values()))}"
    )


def _us(work: Callable[[], object], repeat: int = 2000) -> float:
    """Median over 5 batches of the CPU microseconds one call takes."""
    batches = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(repeat):
            work()
        batches.append((time.process_time() - start) / repeat)
    return 1e6 * statistics.median(batches)


def primitives(sizes: list[int]) -> None:
    """Each neighbour's unavoidable cost, and the floor it puts under a device's round."""
    device = DeviceKey.generate()
    c, s, peer = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    context = secrets.token_bytes(32)
    signature = sign_advertisement(device, context=context, node_id=7, c_pk=c.public, s_pk=s.public)
    seed = secrets.token_bytes(32)
    key = share_key(seed, context=context, sender=1, recipient=2)
    sealed = encrypt_shares(key, context=context, sender=1, recipient=2, key_share=5, mask_share=6)
    costs = {
        "Ed25519 verify (round keys)": _us(
            lambda: verify_advertisement(
                device_key=device.device_key,
                signature=signature,
                context=context,
                node_id=7,
                c_pk=c.public,
                s_pk=s.public,
            )
        ),
        "X25519 agreement": _us(lambda: c.agree(peer.public)),
        f"mask expansion ({LENGTH} words)": _us(
            lambda: expand(seed, length=LENGTH, modulus_bits=BITS, domain="pair")
        ),
        "HKDF share key": _us(lambda: share_key(seed, context=context, sender=1, recipient=2)),
        "AEAD seal + open": _us(
            lambda: encrypt_shares(
                key, context=context, sender=1, recipient=2, key_share=5, mask_share=6
            )
        )
        + _us(lambda: decrypt_shares(key, sealed, context=context, sender=1, recipient=2)),
    }
    print("per neighbour, CPU us: " + ", ".join(f"{k} {v:.1f}" for k, v in costs.items()))
    floor = (
        costs["Ed25519 verify (round keys)"]
        + 2 * costs["X25519 agreement"]
        + costs[f"mask expansion ({LENGTH} words)"]
    )
    for n in sizes:
        graph = choose_graph(n)
        xs = list(range(1, graph.degree + 1))
        shamir = 2 * _us(
            lambda: split_secret(seed, threshold=graph.threshold, xs=xs),  # noqa: B023
            repeat=20,
        )
        print(
            f"  n={n} (d={graph.degree}, t={graph.threshold}): verify + 2 X25519 + mask = "
            f"{floor:.0f} us x {graph.degree} = {floor * graph.degree / 1e3:.1f} ms, "
            f"Shamir (two secrets) {shamir / 1e3:.1f} ms"
        )


def main(argv: list[str]) -> None:
    sizes = [int(arg) for arg in argv] or [50, 200, 500]
    for n in sizes:
        measure(n)
    primitives(sizes)


if __name__ == "__main__":
    main(sys.argv[1:])
