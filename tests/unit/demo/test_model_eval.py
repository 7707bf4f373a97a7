"""``leadflow model-eval``: the offline replay of the processors behind the model figures."""

from leadflow.demo.model_eval import arrival_order, run_eval
from leadflow.processors.events import Event, Kind
from leadflow.processors.policy_load import load_default_policy

P = load_default_policy()
TIMINGS = ("learn_predict_us", "score_us")


def test_a_small_simulation_gives_sane_repeatable_figures() -> None:
    first = run_eval(600, 120, 5, "logreg", P)
    again = run_eval(600, 120, 5, "logreg", P)
    assert {k: v for k, v in first.items() if k not in TIMINGS} == {
        k: v for k, v in again.items() if k not in TIMINGS
    }
    assert first["dead_letters"] == 0
    assert 0 < first["positives"] < first["examples"]
    # One example per episode: 120 days allow at most a few episodes per lead.
    assert first["examples_per_lead_max"] <= 5
    assert first["leads_compared"] <= first["leads_all"] <= first["leads"]
    exact, reported = first["prequential_auc_exact"], first["prequential_auc"]
    assert isinstance(exact, float)
    assert isinstance(reported, float)
    assert abs(exact - reported) < 0.02
    assert isinstance(first["state_p90_bytes"], int)
    assert first["state_p90_bytes"] < 2048


def test_arrival_order_keeps_every_event_and_each_keys_order() -> None:
    events = [
        Event(f"e{i}", Kind.VISIT, "ws", i, i, anonymous_id=f"a{i % 7}", lead_id=None)
        for i in range(100)
    ]
    seen = arrival_order(events, lambda e: e.person_key, partitions=3, batch=4)
    assert sorted(e.event_id for e in seen) == sorted(e.event_id for e in events)
    for device in {e.person_key for e in events}:
        mine = [e.occurred_at for e in seen if e.person_key == device]
        assert mine == sorted(mine)
    assert [e.occurred_at for e in seen] != sorted(e.occurred_at for e in seen)
