"""Per-device and server cost of one secure-aggregation round (prints; asserts nothing).

    python -m tests.secagg.measure [n ...]

Vector length 1441 (the model's size), 32-bit modulus, the planner's graph, 10% of the
devices dropping out after key sharing (so the server also rebuilds dropped keys).
CPU is process time; the harness's own record and wire conversions of each message
count as the device's or server's, session state is saved and restored at every stage.
"""

from __future__ import annotations

import statistics
import sys
import time

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
    wall = time.perf_counter()
    outcome = fed.run(vectors, params=params, drop={"masked-input": dropped})
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


def main(argv: list[str]) -> None:
    for n in [int(arg) for arg in argv] or [50, 200, 500]:
        measure(n)


if __name__ == "__main__":
    main(sys.argv[1:])
