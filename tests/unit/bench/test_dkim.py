"""bench/dkim.py produces a complete record whose sampled signatures all verify."""

from __future__ import annotations

from bench import dkim as bench_dkim
from bench.message import render


def test_run_small() -> None:
    r = bench_dkim.run(messages=20)
    assert r["all_verified"] is True
    # 5 messages x (1 + 2 + 1 + 2 signatures) from the signer, plus 5 from dkim.sign().
    assert r["verify_total"] == bench_dkim.VERIFY_SAMPLE * 7
    for key in ("signer_rsa_ms", "dkimpy_sign_ms", "pair_ms", "ed25519_ms", "openssl_rsa_floor_ms"):
        value = r[key]
        assert isinstance(value, float) and value > 0, key
    assert r["message_bytes"] == len(render(0, "dkim").data)
    goals_met = r["goals_met"]
    assert isinstance(goals_met, dict) and set(goals_met) == {"rsa_ms", "speedup", "pair_ms"}
