"""Row 4 (in-process half): µs per event of the identity and lead steps, and state per lead.

Runs seeded simulated traffic through exactly what the worker's agents do per record, in
one process and without Kafka: Avro-decode the event, decode the stored state, call the
pure processor, Avro-encode what it derived, encode the new state. Each stage is timed
separately with ``perf_counter``; the trained model is fed back as the trainer would, so
scoring costs what it costs once a model is published.

State per lead is the length of ``encode_lead_state`` (what RocksDB and the changelog
hold) at the end of the run, over every lead the simulation created; 1M leads is that
mean times one million (state is per lead, so it scales linearly).

    python -m bench.processors [--people 30000] [--profile]
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from typing import Any

from bench.common import Figure, emit, parser, quantile
from leadflow.demo.simulator.generator import SimConfig, Simulation
from leadflow.demo.simulator.send import message_to_event
from leadflow.processors import derived as d
from leadflow.processors.events import Event, lead_key
from leadflow.processors.identity import (
    IdentityState,
    decode_identity_state,
    encode_identity_state,
    identity_step,
)
from leadflow.processors.lead import lead_step
from leadflow.processors.lead_state import decode_lead_state, encode_lead_state
from leadflow.processors.model import ScoreModel
from leadflow.processors.policy_load import load_default_policy
from leadflow.processors.routing import RoutingState
from leadflow.schemas.codec import codec_from_settings
from leadflow.streams.settings import load_settings

COMMAND = "python -m bench.processors --people {people}"


def run(people: int, profile: bool = False) -> list[Figure]:
    """Push ``people`` simulated people through both steps; return the figures."""
    settings = load_settings()
    codec = codec_from_settings(settings)
    policy = load_default_policy()
    trainer = ScoreModel(policy)
    published: ScoreModel | None = None
    routing = RoutingState()
    encoded = [
        codec.encode(message_to_event(m, "bench"))
        for m in Simulation(SimConfig(people=people, days=180.0, seed=7)).messages()
    ]
    devices: dict[bytes, bytes] = {}
    leads: dict[bytes, bytes] = {}
    identity_s = lead_s = 0.0
    identity_n = lead_n = 0
    clock = time.perf_counter
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    for value in encoded:
        started = clock()
        inbound = codec.decode(value)
        assert isinstance(inbound, Event)
        key = inbound.person_key.encode()
        raw = devices.get(key)
        state: IdentityState | None = decode_identity_state(raw) if raw else None
        new_state, routed = identity_step(state, inbound)
        by_lead = [(r.lead_id, codec.encode(r)) for r in routed]
        if new_state is not None:
            devices[key] = encode_identity_state(new_state)
        identity_s += clock() - started
        identity_n += 1
        for lead_id, routed_value in by_lead:
            assert lead_id is not None
            started = clock()
            event = codec.decode(routed_value)
            assert isinstance(event, Event)
            state_key = lead_key(event.workspace_id, lead_id).encode()
            raw_lead = leads.get(state_key)
            lead_state = decode_lead_state(raw_lead) if raw_lead else None
            after, out = lead_step(lead_state, event, policy, published, routing=routing)
            for obj in out:
                codec.encode(obj)
            leads[state_key] = encode_lead_state(after)
            lead_s += clock() - started
            lead_n += 1
            routing = _route(routing, out)
            published = _train(trainer, published, out, policy.model.snapshot_every)
    if profiler is not None:
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        print(text.getvalue())
    sizes = sorted(len(v) for v in leads.values())
    device_sizes = sorted(len(v) for v in devices.values())
    mean = sum(sizes) / len(sizes)
    command = COMMAND.format(people=people)
    sample = f"{len(sizes):,} leads, {len(device_sizes):,} devices from {people:,} people"
    return [
        Figure(
            "4", "identity step (decode, state, step, encode)", identity_s / identity_n * 1e6,
            "µs/event", command=command,
            notes=f"in-process, {identity_n:,} inbound events",
        ),
        Figure(
            "4", "lead step (decode, state, step+score, encode)", lead_s / lead_n * 1e6,
            "µs/event", command=command,
            notes=f"in-process, {lead_n:,} lead-keyed events, model fed back as trainer",
        ),
        Figure(
            "4", "lead state, mean", mean, "bytes/lead", target="< 2 KB/lead",
            met=mean < 2048, command=command,
            notes=f"p50 {quantile(sizes, 0.5):.0f} B, p99 {quantile(sizes, 0.99):.0f} B, "
            f"max {sizes[-1]} B; {sample}; 1M leads ≈ {mean * 1e6 / 2**30:.2f} GiB",
            extra={"p99": quantile(sizes, 0.99), "max": sizes[-1], "leads": len(sizes)},
        ),
        Figure(
            "4", "identity state, mean", sum(device_sizes) / len(device_sizes), "bytes/device",
            command=command, notes=f"p99 {quantile(device_sizes, 0.99):.0f} B; {sample}",
        ),
    ]  # fmt: skip


def _route(routing: RoutingState, out: list[Any]) -> RoutingState:
    """Move round-robin cursors as the lead agent does after an OwnerAssigned."""
    cursors = dict(routing.cursors)
    for obj in out:
        if isinstance(obj, d.OwnerAssigned):
            cursors[obj.pool] = obj.cursor_after
    return RoutingState(cursors=cursors) if cursors != routing.cursors else routing


def _train(
    trainer: ScoreModel, published: ScoreModel | None, out: list[Any], every: int
) -> ScoreModel | None:
    """Learn from emitted examples; publish (a copy of the weights) every ``every``."""
    for obj in out:
        if isinstance(obj, d.TrainingExample):
            trainer.learn(obj.features, obj.label)
            if trainer.n_learned % every == 0:
                key = b"bench"
                published = ScoreModel.restore(trainer.snapshot(key), key)
    return published


def main() -> None:
    """Parse arguments, run, print and record."""
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--people", type=int, default=None)
    p.add_argument("--profile", action="store_true", help="cProfile the loop (top 25)")
    args = p.parse_args()
    people = args.people or (600 if args.quick else 6_000)
    emit(run(people, args.profile), args.json)


if __name__ == "__main__":
    main()
