"""How big each suite runs: ``small`` (default, minutes) and ``full`` (the report's sizes)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sizes:
    name: str
    repeats: int  # rounds per point of the network tests (the report: 50)
    a: tuple[int, ...]  # test a: messages to one listener
    b: tuple[int, ...]  # test b: listeners sharing 1000 messages
    c: tuple[int, ...]  # test c: monitors (one listener each) sharing 1000 messages
    messages: int  # messages in tests b and c
    cap_s: float  # per point, meow_async and the floor
    meow_base_cap_s: float  # per point, meow_base (its child process is killed at the cap)
    quiet_s: float  # silence after the sender finished that counts as lost messages
    paced_n: int  # the latency test: messages sent one per millisecond
    file_latency_n: int  # single-file samples per watcher setting
    burst_n: int  # files in a burst
    jobs_n: int  # events -> jobs end to end, per recipe kind
    jobs_repeats: int
    idle_connections: int
    flood_messages: int
    flood_concurrency: int
    flood_size: int
    tls_idle_connections: int  # idle TLS connections held (caps raised above them)
    tls_stalled_connections: int  # per round: TCP connections that never send a ClientHello
    tls_stalled_rounds: int


SMALL = Sizes(
    name="small",
    repeats=3,
    a=(1, 10, 100, 1000),
    b=(1, 10, 100, 1000),
    c=(1, 10, 100, 1000),
    messages=1000,
    cap_s=120.0,
    meow_base_cap_s=8.0,
    quiet_s=3.0,
    paced_n=1000,
    file_latency_n=20,
    burst_n=200,
    jobs_n=100,
    jobs_repeats=2,
    idle_connections=10_000,
    flood_messages=5_000,
    flood_concurrency=1_000,
    flood_size=64 * 1024,
    tls_idle_connections=300,
    tls_stalled_connections=2_000,
    tls_stalled_rounds=3,
)

FULL = Sizes(
    name="full",
    repeats=50,
    a=(1, 10, 100, 1000),
    b=(1, 10, 100, 250, 500, 1000),
    c=(1, 10, 100, 250, 500, 1000),
    messages=1000,
    cap_s=900.0,
    meow_base_cap_s=60.0,
    quiet_s=15.0,
    paced_n=1000,
    file_latency_n=100,
    burst_n=1000,
    jobs_n=1000,
    jobs_repeats=3,
    idle_connections=10_000,
    flood_messages=20_000,
    flood_concurrency=2_000,
    flood_size=64 * 1024,
    tls_idle_connections=1_500,
    tls_stalled_connections=2_000,
    tls_stalled_rounds=3,
)

SIZES = {"small": SMALL, "full": FULL}
