"""KeyStore.load checks every key file when config loads; create_missing; keygen; rotation."""

from __future__ import annotations

import base64
import logging
import os
import random
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from dispatcher.config import Config, ConfigError, parse_config
from dispatcher.dkim.keys import (
    DkimKeyError,
    KeyFileExistsError,
    KeygenError,
    PrivateKey,
    generate_key,
    keygen,
    public_key_bytes,
)
from dispatcher.dkim.signer import DkimSigner
from dispatcher.dkim.store import KeyStore

T0 = 1767225600.0
MSG = (
    b"From: news@acme-news.example\r\nTo: jane@example.org\r\nSubject: hi\r\n"
    b"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <k1@acme-news.example>\r\n"
    b"\r\nbody\r\n"
)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    key = generate_key("rsa")
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.fixture(scope="module")
def rsa_key2() -> PrivateKey:
    return generate_key("rsa")


def pem(
    key: PrivateKey, fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8
) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def small_rsa(bits: int = 768) -> rsa.RSAPrivateKey:
    """An RSA key below the 1024-bit floor (cryptography refuses to generate one)."""
    rnd = random.Random(bits)

    def is_prime(n: int) -> bool:
        d, s = n - 1, 0
        while d % 2 == 0:
            d, s = d // 2, s + 1
        for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
            x = pow(a, d, n)
            if x in (1, n - 1):
                continue
            for _ in range(s - 1):
                x = pow(x, 2, n)
                if x == n - 1:
                    break
            else:
                return False
        return True

    def prime() -> int:
        while True:
            c = rnd.getrandbits(bits // 2) | (3 << (bits // 2 - 2)) | 1
            if all(c % p for p in (3, 5, 7, 11, 13)) and (c - 1) % 65537 and is_prime(c):
                return c

    p, q = prime(), prime()
    e = 65537
    d = pow(e, -1, (p - 1) * (q - 1))
    return rsa.RSAPrivateNumbers(
        p,
        q,
        d,
        rsa.rsa_crt_dmp1(d, p),
        rsa.rsa_crt_dmq1(d, q),
        rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    ).private_key()


def config(tmp_path: Path, keys: list[dict[str, Any]], create_missing: bool = False) -> Config:
    """A whole config through the real parser, so key paths are those ops see."""
    raw = {
        "dkim": {"create_missing": create_missing, "keys": keys},
        "pools": [
            {
                "name": "p",
                "ips": [{"address": "127.0.0.2", "ehlo": "mta.mdplatform.example"}],
                "domains": [{"domain": "send1.mdplatform.example", "sign": False}],
            }
        ],
    }
    return parse_config(raw, base_dir=tmp_path)


def entry(domain: str, selector: str, file: Path, **kw: Any) -> dict[str, Any]:
    return {"domain": domain, "selector": selector, "file": str(file), **kw}


def dnsfunc_from(records: dict[bytes, bytes]) -> Callable[..., bytes | None]:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return dnsfunc


def load_error(cfg: Config) -> DkimKeyError:
    with pytest.raises(DkimKeyError) as e:
        KeyStore.load(cfg.dkim)
    assert isinstance(e.value, ConfigError)
    return e.value


def test_pkcs8_pkcs1_and_ed25519_formats_load_and_sign(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, rsa_key2: PrivateKey
) -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    ed_raw = ed.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    files = {
        "p8": write(tmp_path / "a.p8.pem", pem(rsa_key)),
        "p1": write(
            tmp_path / "b.p1.pem", pem(rsa_key2, serialization.PrivateFormat.TraditionalOpenSSL)
        ),
        "ed": write(tmp_path / "a.ed.pem", pem(ed)),
        "ed_dkimpy": write(tmp_path / "c.ed.key", base64.b64encode(ed_raw) + b"\n"),
    }
    assert b"BEGIN RSA PRIVATE KEY" in files["p1"].read_bytes()
    cfg = config(
        tmp_path,
        [
            entry("a.example", "s1", files["p8"]),
            entry("a.example", "e1", files["ed"], type="ed25519"),
            entry("b.example", "s1", files["p1"]),
            entry("c.example", "s1", files["p8"], active_from=0),
            entry("c.example", "e1", files["ed_dkimpy"], type="ed25519"),
        ],
    )
    store = KeyStore.load(cfg.dkim)
    assert store.domains() == {"a.example", "b.example", "c.example"}
    assert [k.bits for k in store.active("a.example", T0)] == [2048, 256]
    signed = DkimSigner(store).sign(MSG, ["a.example", "b.example", "c.example"], T0) + MSG
    d = dkim.DKIM(signed)
    dns = dnsfunc_from(store.dns_records())
    assert [d.verify(idx=i, dnsfunc=dns) for i in range(5)] == [True] * 5


def test_missing_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    good = write(tmp_path / "good.pem", pem(rsa_key))
    cfg = config(
        tmp_path,
        [entry("a.example", "s1", good), entry("b.example", "sel9", tmp_path / "nope.pem")],
    )
    err = load_error(cfg)
    assert err.key_path == "dkim.keys[1].file"
    assert "b.example" in str(err) and "sel9" in str(err) and "nope.pem" in str(err)
    assert "not found" in str(err)


@pytest.mark.parametrize(
    "content,needle",
    [
        (b"hello, not a key\n", "PEM"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PEM"),
        (
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "encrypted",
        ),
    ],
)
def test_unreadable_key_file(tmp_path: Path, content: bytes, needle: str) -> None:
    f = write(tmp_path / "bad.pem", content)
    err = load_error(config(tmp_path, [entry("a.example", "s1", f)]))
    assert err.key_path == "dkim.keys[0].file"
    assert needle in str(err) and "a.example" in str(err) and "s1" in str(err)


def test_rsa_under_1024_bits(tmp_path: Path) -> None:
    f = write(tmp_path / "weak.pem", pem(small_rsa(768)))
    err = load_error(config(tmp_path, [entry("a.example", "weak", f)]))
    assert err.key_path == "dkim.keys[0].file"
    assert "768 bits" in str(err) and "weak" in str(err)


def test_type_mismatch(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    f = write(tmp_path / "k.pem", pem(ed25519.Ed25519PrivateKey.generate()))
    rsa_file = write(tmp_path / "r.pem", pem(rsa_key))
    err = load_error(config(tmp_path, [entry("a.example", "s1", f)]))
    assert err.key_path == "dkim.keys[0].file" and "ed25519" in str(err)
    err = load_error(
        config(
            tmp_path,
            [
                entry("a.example", "s1", rsa_file),
                entry("a.example", "e1", rsa_file, type="ed25519"),
            ],
        )
    )
    assert err.key_path == "dkim.keys[1].file"


def test_public_key_must_match(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, rsa_key2: PrivateKey
) -> None:
    f = write(tmp_path / "k.pem", pem(rsa_key))
    p_right = base64.b64encode(public_key_bytes(rsa_key)).decode()
    p_wrong = base64.b64encode(public_key_bytes(rsa_key2)).decode()
    # The bare p= value, or the record as copied from a zone file (split, quoted), both match.
    zone = f'"v=DKIM1; k=rsa; p={p_right[:200]}" "{p_right[200:]}"'
    for good in (p_right, zone):
        KeyStore.load(config(tmp_path, [entry("a.example", "s1", f, public_key=good)]).dkim)
    cfg = config(
        tmp_path,
        [
            entry("a.example", "s0", f),
            entry("a.example", "s1", f, public_key=p_wrong, active_from=1),
        ],
    )
    err = load_error(cfg)
    assert err.key_path == "dkim.keys[1].public_key"
    assert "does not match" in str(err) and "s1" in str(err) and "k.pem" in str(err)
    err = load_error(config(tmp_path, [entry("a.example", "s1", f, public_key="not*base64!")]))
    assert err.key_path == "dkim.keys[0].public_key"


def test_layout_errors(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    f = write(tmp_path / "k.pem", pem(rsa_key))
    ed = write(tmp_path / "e.pem", pem(ed25519.Ed25519PrivateKey.generate()))
    dup = config(
        tmp_path, [entry("a.example", "s1", f), entry("a.example", "s1", f, active_from=5)]
    )
    assert load_error(dup).key_path == "dkim.keys[1].selector"
    tie = config(tmp_path, [entry("a.example", "s1", f), entry("a.example", "s2", f)])
    assert load_error(tie).key_path == "dkim.keys[1].active_from"
    ed_only = config(
        tmp_path, [entry("a.example", "s1", f), entry("b.example", "e1", ed, type="ed25519")]
    )
    assert load_error(ed_only).key_path == "dkim.keys[1].type"


def test_world_readable_key_is_refused_or_with_allow_insecure_warns_without_the_key(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    data = pem(rsa_key)
    private = write(tmp_path / "private.pem", data, 0o600)
    exposed = write(tmp_path / "exposed.pem", data, 0o644)
    caplog.set_level(logging.WARNING)
    KeyStore.load(config(tmp_path, [entry("a.example", "s1", private)]).dkim)
    assert not caplog.records
    # Issue 10: refused at load unless [security] allow_insecure_permissions.
    refused = load_error(config(tmp_path, [entry("a.example", "s1", exposed)]))
    assert refused.key_path == "dkim.keys[0].file"
    assert "readable by group or others (mode 644)" in str(refused)
    assert "allow_insecure_permissions" in str(refused)
    # Checked on the resolved target: a mounted secret is a symlink (its own mode 0777).
    link_ok = tmp_path / "link-ok.pem"
    link_ok.symlink_to(private)
    KeyStore.load(config(tmp_path, [entry("a.example", "s1", link_ok)]).dkim)
    link_bad = tmp_path / "link-bad.pem"
    link_bad.symlink_to(exposed)
    assert load_error(config(tmp_path, [entry("a.example", "s1", link_bad)])).key_path == (
        "dkim.keys[0].file"
    )
    assert not caplog.records
    KeyStore.load(config(tmp_path, [entry("a.example", "s1", exposed)]).dkim, allow_insecure=True)
    assert len(caplog.records) == 1
    text = caplog.text
    assert "exposed.pem" in text and "644" in text
    body = b"".join(data.splitlines()[1:-1]).decode()
    assert body[:40] not in text and "PRIVATE KEY" not in text


def test_create_missing_generates_0600_keys(tmp_path: Path) -> None:
    f_rsa = tmp_path / "state" / "dkim" / "a.example.s1.pem"
    f_ed = tmp_path / "state" / "dkim" / "a.example.e1.pem"
    keys = [entry("a.example", "s1", f_rsa), entry("a.example", "e1", f_ed, type="ed25519")]
    store = KeyStore.load(config(tmp_path, keys, create_missing=True).dkim)
    for f in (f_rsa, f_ed):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE(f_rsa.parent.stat().st_mode) & 0o077 == 0
    assert not [p for p in f_rsa.parent.iterdir() if p.name.startswith(".")]  # no temp files left
    # The next start reads the same keys instead of making new ones.
    again = KeyStore.load(config(tmp_path, keys, create_missing=True).dkim)
    assert again.dns_records() == store.dns_records()
    signed = DkimSigner(again).sign(MSG, ["a.example"], T0) + MSG
    dns = dnsfunc_from(store.dns_records())
    assert [dkim.DKIM(signed).verify(idx=i, dnsfunc=dns) for i in range(2)] == [True, True]


def test_create_missing_creates_nothing_when_another_key_is_bad(tmp_path: Path) -> None:
    missing = tmp_path / "dkim" / "new.pem"
    bad = write(tmp_path / "bad.pem", b"garbage")
    cfg = config(
        tmp_path,
        [entry("a.example", "s1", missing), entry("b.example", "s1", bad)],
        create_missing=True,
    )
    assert load_error(cfg).key_path == "dkim.keys[1].file"
    assert not missing.exists()


def test_create_missing_cannot_match_a_configured_public_key(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    p = base64.b64encode(public_key_bytes(rsa_key)).decode()
    missing = tmp_path / "new.pem"
    cfg = config(tmp_path, [entry("a.example", "s1", missing, public_key=p)], create_missing=True)
    assert load_error(cfg).key_path == "dkim.keys[0].public_key"
    assert not missing.exists()


def test_missing_without_create_missing_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "new.pem"
    cfg = config(tmp_path, [entry("a.example", "s1", missing)], create_missing=False)
    assert load_error(cfg).key_path == "dkim.keys[0].file"
    assert not missing.exists()


def test_active_follows_active_from(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    f = write(tmp_path / "k.pem", pem(rsa_key))
    ed = write(tmp_path / "e.pem", pem(ed25519.Ed25519PrivateKey.generate()))
    cfg = config(
        tmp_path,
        [
            entry("a.example", "s2027", f, active_from="2027-01-01T00:00:00Z"),
            entry("a.example", "s2026", f, active_from="2026-01-01T00:00:00Z"),
            entry("a.example", "e2026", ed, type="ed25519", active_from="2026-06-01T00:00:00Z"),
        ],
    )
    store = KeyStore.load(cfg.dkim)
    y2026, y2027 = 1767225600.0, 1798761600.0

    def sel(now: float) -> list[str]:
        return [k.selector for k in store.active("a.example", now)]

    assert sel(y2026 - 1) == []
    assert sel(y2026) == ["s2026"]
    assert sel(y2026 + 180 * 86400) == ["s2026", "e2026"]
    assert sel(y2027 - 0.5) == ["s2026", "e2026"]
    assert sel(y2027) == ["s2027", "e2026"]
    assert store.active("other.example", y2027) == []
    assert set(store.dns_records()) == {
        b"s2027._domainkey.a.example.",
        b"s2026._domainkey.a.example.",
        b"e2026._domainkey.a.example.",
    }


def _txt_from_zone_line(line: str) -> tuple[bytes, bytes]:
    name, _, rest = line.partition(" IN TXT ")
    value = "".join(re.findall(r'"([^"]*)"', rest))
    return (name + ".").encode(), value.encode()


@pytest.mark.parametrize("key_type,bits", [("rsa", 2048), ("rsa", 1024), ("ed25519", 2048)])
def test_keygen_writes_0600_and_its_record_verifies(
    tmp_path: Path, key_type: str, bits: int
) -> None:
    out = tmp_path / "keys"
    path, record = keygen("a.example", "k1", key_type=key_type, bits=bits, out_dir=out)
    assert path == out / "a.example.k1.pem"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert record.startswith('k1._domainkey.a.example IN TXT "v=DKIM1; k=' + key_type + "; p=")
    assert all(len(s) <= 255 for s in re.findall(r'"([^"]*)"', record))
    name, txt = _txt_from_zone_line(record)
    # The key file goes through the normal config path; the record comes only from keygen.
    extra = (
        []
        if key_type == "rsa"
        else [entry("a.example", "r1", write(tmp_path / "r.pem", pem(generate_key("rsa"))))]
    )
    cfg = config(tmp_path, [entry("a.example", "k1", path, type=key_type, active_from=1), *extra])
    store = KeyStore.load(cfg.dkim)
    records = {**store.dns_records(), name: txt}
    signed = DkimSigner(store).sign(MSG, ["a.example"], T0) + MSG
    d = dkim.DKIM(signed)
    index = 0 if key_type == "rsa" else 1
    assert d.verify(idx=index, dnsfunc=dnsfunc_from({name: txt}))
    assert d.verify(idx=index, dnsfunc=dnsfunc_from(records))


def test_keygen_refuses_to_overwrite_and_bad_arguments(tmp_path: Path) -> None:
    path, _ = keygen("a.example", "k1", key_type="ed25519", out_dir=tmp_path)
    before = path.read_bytes()
    with pytest.raises(KeyFileExistsError):
        keygen("a.example", "k1", key_type="ed25519", out_dir=tmp_path)
    assert path.read_bytes() == before
    bad: list[tuple[dict[str, Any], str]] = [
        ({"domain": "not a domain"}, "domain"),
        ({"selector": "bad selector"}, "selector"),
        ({"key_type": "dsa"}, "key_type"),
        ({"bits": 512}, "bits"),
        ({"bits": 2050}, "bits"),
    ]
    for kwargs, field in bad:
        args: dict[str, Any] = {
            "domain": "b.example",
            "selector": "k1",
            "out_dir": tmp_path,
            **kwargs,
        }
        with pytest.raises(KeygenError) as e:
            keygen(**args)
        assert e.value.field == field
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.example.k1.pem"]


def test_inconsistent_rsa_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    # Loading skips OpenSSL's slow full key check; the sign-and-verify self-test stands in.
    n = rsa_key.private_numbers()
    broken = rsa.RSAPrivateNumbers(
        n.p, n.q, n.d + 2, n.dmp1 + 2, n.dmq1 + 2, n.iqmp, n.public_numbers
    ).private_key(unsafe_skip_rsa_key_validation=True)
    f = write(tmp_path / "broken.pem", pem(broken))
    err = load_error(config(tmp_path, [entry("a.example", "s1", f)]))
    assert err.key_path == "dkim.keys[0].file" and "inconsistent" in str(err)
