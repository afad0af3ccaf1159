"""Bot selection (ari_app/calls/bots.py): order, weights, health, per-bot limits."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from msgspec.structs import replace

from ari_app.calls.bots import (
    SKIP_MAX_CALLS_PER_SECOND,
    SKIP_MAX_CONCURRENT,
    SKIP_UNREACHABLE,
    BotPool,
)
from ari_app.config import BotTarget, ConfigError, load_config

A, B, C = "sip:a@127.0.0.1:5080", "sip:b@127.0.0.2:5080", "sip:c@127.0.0.3:5080"
BASE = load_config(env={"BOTBRIDGE_ARI_PASSWORD": "x"}).profiles["default"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def profile(*bots: BotTarget):  # type: ignore[no-untyped-def]
    return replace(BASE, bots=bots, bot_uri=bots[0].uri)


def test_one_bot_is_the_whole_plan_without_a_random_draw() -> None:
    rng = random.Random(1)
    state = rng.getstate()
    pool = BotPool(rng=rng)
    single = profile(BotTarget(A, weight=5))
    assert [t.uri for t in pool.plan(single)] == [A]
    assert rng.getstate() == state


def test_without_weights_the_bots_are_tried_in_list_order() -> None:
    pool = BotPool()
    assert [t.uri for t in pool.plan(profile(BotTarget(A), BotTarget(B), BotTarget(C)))] == [
        A,
        B,
        C,
    ]


def test_weights_split_first_attempts_and_the_rest_follow_in_order() -> None:
    pool = BotPool(rng=random.Random(7))
    split = profile(BotTarget(A, weight=1), BotTarget(B, weight=3), BotTarget(C))
    firsts: Counter[str] = Counter()
    for _ in range(4000):
        plan = [t.uri for t in pool.plan(split)]
        firsts[plan[0]] += 1
        assert sorted(plan) == [A, B, C]
        assert plan[1:] == [u for u in (A, B, C) if u != plan[0]]
    assert firsts[C] == 0  # weight 0: a backup only
    assert 0.22 < firsts[A] / 4000 < 0.28


def test_an_unreachable_bot_is_skipped_and_the_next_is_claimed() -> None:
    pool = BotPool()
    plan = profile(BotTarget(A), BotTarget(B)).targets
    pool.set_reachable(A, False)
    claim = pool.claim(plan)
    assert claim.target is not None and claim.target.uri == B
    assert claim.skipped == ((A, SKIP_UNREACHABLE),)
    assert claim.next_index == 2
    pool.set_reachable(A, True)
    again = pool.claim(plan)
    assert again.target is not None and again.target.uri == A


def test_max_concurrent_calls_moves_the_third_call_to_the_next_bot() -> None:
    pool = BotPool()
    plan = profile(BotTarget(A, max_concurrent_calls=2), BotTarget(B)).targets
    first, second, third = (pool.claim(plan) for _ in range(3))
    assert [c.target.uri for c in (first, second, third) if c.target] == [A, A, B]
    assert third.skipped == ((A, SKIP_MAX_CONCURRENT),)
    assert pool.active_by_uri([A, B]) == {A: 2, B: 1}
    pool.release(A)
    fourth = pool.claim(plan)
    assert fourth.target is not None and fourth.target.uri == A


def test_max_calls_per_second_refills_with_time() -> None:
    clock = Clock()
    pool = BotPool(clock=clock)
    plan = profile(BotTarget(A, max_calls_per_second=2), BotTarget(B)).targets
    got = [pool.claim(plan) for _ in range(3)]
    assert [c.target.uri for c in got if c.target] == [A, A, B]
    assert got[2].skipped == ((A, SKIP_MAX_CALLS_PER_SECOND),)
    clock.now += 0.5  # one token back
    later = pool.claim(plan)
    assert later.target is not None and later.target.uri == A


def test_no_bot_left_is_a_claim_without_target() -> None:
    pool = BotPool()
    plan = profile(BotTarget(A), BotTarget(B)).targets
    pool.set_reachable(A, False)
    pool.set_reachable(B, False)
    claim = pool.claim(plan)
    assert claim.target is None
    assert claim.skipped == ((A, SKIP_UNREACHABLE), (B, SKIP_UNREACHABLE))
    assert pool.active_by_uri([A, B]) == {A: 0, B: 0}


def test_the_weighted_pick_avoids_a_bot_that_is_not_eligible() -> None:
    pool = BotPool(rng=random.Random(3))
    split = profile(BotTarget(A, weight=1), BotTarget(B, weight=1))
    pool.set_reachable(A, False)
    assert {pool.plan(split)[0].uri for _ in range(50)} == {B}


def test_config_accepts_bot_uris_and_bot_tables() -> None:
    env = {"BOTBRIDGE_ARI_PASSWORD": "x"}
    listed = load_config(env=env, overrides={"profiles": {"default": {"bot_uris": [A, B]}}})
    assert [b.uri for b in listed.profiles["default"].bots] == [A, B]
    assert listed.profiles["default"].bot_uri == A
    tables = load_config(
        env=env,
        overrides={
            "profiles": {
                "default": {
                    "bots": [
                        {"uri": A, "weight": 50, "max_concurrent_calls": 2},
                        {"uri": B, "weight": 50, "max_calls_per_second": 1.5},
                    ]
                }
            }
        },
    )
    bots = tables.profiles["default"].bots
    assert bots == (
        BotTarget(A, weight=50, max_concurrent_calls=2),
        BotTarget(B, weight=50, max_calls_per_second=1.5),
    )
    single = load_config(env=env)
    assert single.profiles["default"].bots == (BotTarget("sip:voicebot@127.0.0.1:5080"),)


@pytest.mark.parametrize(
    ("bots", "message"),
    [
        ([{"uri": "sip:a@h", "weight": -1}], "weight"),
        ([{"uri": "not a uri"}], "uri"),
        ([{"uri": A}, {"uri": A}], "listed twice"),
    ],
)
def test_config_rejects_bad_bot_entries(bots: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(
            env={"BOTBRIDGE_ARI_PASSWORD": "x"}, overrides={"profiles": {"default": {"bots": bots}}}
        )


def test_probed_bots_get_a_health_endpoint_each() -> None:
    config = load_config(
        env={"BOTBRIDGE_ARI_PASSWORD": "x"},
        overrides={
            "bot_health": {"qualify_frequency_seconds": 10},
            "profiles": {
                "default": {
                    "bots": [{"uri": A}, {"uri": B, "qualify_frequency_seconds": 0}, {"uri": C}]
                }
            },
        },
    )
    assert config.bot_health_endpoints() == {
        "botbridge-bot-1": (A, 10),
        "botbridge-bot-3": (C, 10),
    }
    from ari_app.asterisk import bot_health_sections

    text = bot_health_sections(config)
    assert f"[botbridge-bot-1]\ntype = aor\ncontact = {A}\nqualify_frequency = 10" in text
    assert "botbridge-bot-2" not in text
