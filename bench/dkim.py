"""DKIM signing alone: the project's signer against plain `dkim.sign()` on the standard message.

Run with `python -m bench.dkim [MESSAGES]` (not `python bench/dkim.py`, which would shadow
dkimpy's `dkim` package). `run()` returns the record; `maildispatch bench` runs it as `dkim`.

Figures: median milliseconds per message for one RSA-2048 signature (author domain), the
author+platform RSA pair, one Ed25519 signature, RSA+Ed25519 for one domain, and dkimpy's
`dkim.sign()` (fewer iterations: it is slow); plus the bare OpenSSL RSA-2048 private-key
operation, the floor under any RSA signer on this machine. A sample of every kind of
signature is verified with dkimpy.
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from bench.message import render
from dispatcher.config import DkimKeyConfig, KeyType
from dispatcher.dkim.canon import h_names, relaxed_header, select_signed, split_message
from dispatcher.dkim.keys import SigningKey, generate_key, signing_key
from dispatcher.dkim.signer import DkimSigner
from dispatcher.dkim.store import KeyStore

AUTHOR = "bench-author.example"
PLATFORM = "send1.bench-platform.example"
ED_ONLY = "bench-ed25519.example"  # Ed25519 alone, only to time that signature by itself
BOTH = "bench-both.example"  # RSA + Ed25519
NOW = 1767225600.0  # a fixed t=, so runs sign identical bytes
GOALS = {"rsa_ms_max": 0.6, "speedup_min": 12.0, "pair_ms_max": 1.0}
VERIFY_SAMPLE = 5  # messages per kind whose signatures are checked with dkim.verify()


def _key(domain: str, selector: str, key_type: str) -> SigningKey:
    cfg = DkimKeyConfig(
        domain=domain, selector=selector, file=Path("/nonexistent"), key_type=KeyType(key_type)
    )
    return signing_key(cfg, generate_key(key_type, 2048))


def _summary(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {
        "median_ms": round(statistics.median(s), 4),
        "p90_ms": round(s[min(len(s) - 1, int(len(s) * 0.9))], 4),
        "n": len(s),
    }


def _verify_all(signed: bytes, records: dict[bytes, bytes]) -> tuple[int, int]:
    """(verified, total) over every DKIM-Signature of `signed`."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    total = sum(1 for line in signed.split(b"\r\n") if line[:15].lower() == b"dkim-signature:")
    d = dkim.DKIM(signed)
    ok = sum(1 for i in range(total) if d.verify(idx=i, dnsfunc=dnsfunc))
    return ok, total


def run(messages: int = 2000) -> dict[str, object]:
    """Time the signer and dkim.sign() on `messages` standard messages; return the record."""
    if messages < 20:
        raise ValueError("messages: at least 20")
    keys = [
        _key(AUTHOR, "md1", "rsa"),
        _key(PLATFORM, "fbl1", "rsa"),
        _key(ED_ONLY, "ed1", "ed25519"),
        _key(BOTH, "md1", "rsa"),
        _key(BOTH, "ed1", "ed25519"),
    ]
    store = KeyStore(keys)
    signer = DkimSigner(store, "relaxed/relaxed")
    datas = [render(i, "dkim").data for i in range(messages)]

    kinds: dict[str, list[str]] = {
        "rsa": [AUTHOR],
        "pair": [AUTHOR, PLATFORM],
        "ed25519": [ED_ONLY],
        "rsa_ed25519": [BOTH],
    }
    author_key = keys[0].private_key
    assert isinstance(author_key, rsa.RSAPrivateKey)
    digest = hashlib.sha256(b"bench").digest()
    pkcs1, prehashed = padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
    pem = author_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    # dkimpy's own sign() gets the same key, canonicalisation and signed-field list.
    counts, _ = select_signed(split_message(datas[0])[0], relaxed_header)
    include = h_names(counts)
    ms: dict[str, list[float]] = {k: [] for k in (*kinds, "openssl_rsa_floor", "dkimpy_sign")}
    signer.sign(datas[0], [AUTHOR], NOW)  # warm the caches once, outside the timings
    clock = time.perf_counter_ns
    # Interleaved, message by message, so that load from other processes on a shared machine
    # falls on every kind alike and the ratios stay fair.
    for i, m in enumerate(datas):
        for kind, domains in kinds.items():
            t0 = clock()
            signer.sign(m, domains, NOW)
            ms[kind].append((clock() - t0) / 1e6)
        if i % 4 == 0:  # the floor: OpenSSL's RSA-2048 private-key operation on a ready digest
            t0 = clock()
            author_key.sign(digest, pkcs1, prehashed)
            ms["openssl_rsa_floor"].append((clock() - t0) / 1e6)
        if i % 20 == 0:  # dkimpy is ~50x slower: a twentieth of the messages
            t0 = clock()
            dkim.sign(
                m,
                b"md1",
                AUTHOR.encode(),
                pem,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=include,
            )
            ms["dkimpy_sign"].append((clock() - t0) / 1e6)
    results = {k: _summary(v) for k, v in ms.items()}
    floor, dk = results["openssl_rsa_floor"], results["dkimpy_sign"]

    records = store.dns_records()
    verified = total = 0
    for domains in kinds.values():
        for m in datas[:VERIFY_SAMPLE]:
            ok, n = _verify_all(signer.sign(m, domains, NOW) + m, records)
            verified, total = verified + ok, total + n
    for m in datas[:VERIFY_SAMPLE]:  # and dkimpy's own signatures, as a control
        ok, n = _verify_all(dkim.sign(m, b"md1", AUTHOR.encode(), pem) + m, records)
        verified, total = verified + ok, total + n

    rsa_ms = results["rsa"]["median_ms"]
    speedup = dk["median_ms"] / rsa_ms
    record: dict[str, Any] = {
        "scenario": "dkim",
        "messages": messages,
        "message_bytes": len(datas[0]),
        "rsa_bits": 2048,
        "canonicalization": "relaxed/relaxed",
        "signer_rsa_ms": rsa_ms,
        "dkimpy_sign_ms": dk["median_ms"],
        "speedup": round(speedup, 1),
        "pair_ms": results["pair"]["median_ms"],
        "ed25519_ms": results["ed25519"]["median_ms"],
        "rsa_ed25519_ms": results["rsa_ed25519"]["median_ms"],
        "openssl_rsa_floor_ms": floor["median_ms"],
        "signer_overhead_ms": round(rsa_ms - floor["median_ms"], 4),
        "detail": results,
        "verified": verified,
        "verify_total": total,
        "all_verified": verified == total,
        "goals": GOALS,
        "goals_met": {
            "rsa_ms": rsa_ms <= GOALS["rsa_ms_max"],
            "speedup": speedup >= GOALS["speedup_min"],
            "pair_ms": results["pair"]["median_ms"] <= GOALS["pair_ms_max"],
        },
    }
    return record


def main(argv: Sequence[str] = ()) -> int:
    """Print the record as a table; exit 1 when a signature failed to verify."""
    messages = int(argv[0]) if argv else 2000
    r = run(messages)
    goals_met: dict[str, bool] = r["goals_met"]  # type: ignore[assignment]
    rows = [
        (
            "RSA-2048, author (signer)",
            f"{r['signer_rsa_ms']:.3f} ms",
            f"goal <= {GOALS['rsa_ms_max']}",
        ),
        ("dkim.sign() (dkimpy, pure-Python RSA)", f"{r['dkimpy_sign_ms']:.3f} ms", ""),
        ("speedup", f"{r['speedup']:.1f}x", f"goal >= {GOALS['speedup_min']:.0f}x"),
        ("author + platform RSA pair", f"{r['pair_ms']:.3f} ms", f"goal <= {GOALS['pair_ms_max']}"),
        ("Ed25519 alone", f"{r['ed25519_ms']:.3f} ms", ""),
        ("RSA + Ed25519, one domain", f"{r['rsa_ed25519_ms']:.3f} ms", ""),
        ("OpenSSL RSA-2048 sign alone (floor)", f"{r['openssl_rsa_floor_ms']:.3f} ms", ""),
        ("signer overhead above the floor", f"{r['signer_overhead_ms']:.3f} ms", ""),
        ("signatures verified (dkim.verify)", f"{r['verified']}/{r['verify_total']}", ""),
    ]
    print(f"DKIM bench: {r['messages']} messages of {r['message_bytes']} bytes, median per message")
    for name, value, goal in rows:
        print(f"  {name:<40} {value:>12}  {goal}")
    print("  goals met: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in goals_met.items()))
    return 0 if r["all_verified"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
