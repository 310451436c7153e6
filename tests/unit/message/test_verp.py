"""VERP tokens: round trip, forgery, local-part length, the secret file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dispatcher.message.intake import new_message_id
from dispatcher.message.verp import SECRET_BYTES, Verp, VerpKeyError

SECRET = bytes(range(32))
DOMAIN = "send1.mdplatform.example"


def test_round_trip_of_generated_ids() -> None:
    verp = Verp(SECRET, "b")
    for i in range(200):
        mid = new_message_id(1_700_000_000.0 + i)
        address = verp.address(verp.token(mid), DOMAIN)
        assert address.startswith("b-") and address.endswith("@" + DOMAIN)
        assert verp.parse(address) == mid


@pytest.mark.parametrize("mid", ["m1", "msg-000042", "a" * 18, "0190a1b2c3d4e5f6"])
def test_round_trip_of_other_ascii_ids(mid: str) -> None:
    verp = Verp(SECRET, "bounce")
    assert verp.parse(verp.address(verp.token(mid), DOMAIN)) == mid


@pytest.mark.parametrize("mid", ["", "a" * 19, "idé", "0190A1B2C3D4E5F60718293A4B5C6D7E"])
def test_ids_that_cannot_fit_are_refused(mid: str) -> None:
    with pytest.raises(ValueError):
        Verp(SECRET).token(mid)


def test_token_is_deterministic_and_lower_case_alphanumeric() -> None:
    verp = Verp(SECRET)
    mid = new_message_id(1_700_000_000.0)
    token = verp.token(mid)
    assert token == verp.token(mid)
    assert token.isalnum() and token == token.lower() and token.isascii()


@pytest.mark.parametrize("prefix", ["b", "bounces", "p" * 16])
@pytest.mark.parametrize("mid", [new_message_id(1.0), "r" * 18])
def test_local_part_at_most_64_octets(prefix: str, mid: str) -> None:
    verp = Verp(SECRET, prefix)
    local = verp.address(verp.token(mid), DOMAIN).partition("@")[0]
    assert len(local.encode()) <= 64


def test_every_altered_character_is_refused() -> None:
    verp = Verp(SECRET)
    mid = new_message_id(1_700_000_000.0)
    token = verp.token(mid)
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    for i, ch in enumerate(token):
        for other in alphabet:
            if other != ch:
                forged = token[:i] + other + token[i + 1 :]
                assert verp.parse(verp.address(forged, DOMAIN)) is None, (i, other)


def test_truncated_extended_and_foreign_tokens_are_refused() -> None:
    verp = Verp(SECRET)
    mid = new_message_id(1_700_000_000.0)
    token = verp.token(mid)
    for bad in (token[:-1], token + "a", token[:20], "", "b-" + token, token[:-1] + "="):
        assert verp.parse(verp.address(bad, DOMAIN)) is None
    other = Verp(bytes(32), "b")
    assert other.parse(verp.address(token, DOMAIN)) is None
    assert Verp(SECRET, "x").parse(verp.address(token, DOMAIN)) is None
    for junk in ("", "@", "b-@x", "b@x", "nobody@example.org", "b--@x", "b-!!!!@x"):
        assert verp.parse(junk) is None


def test_parse_ignores_case_and_domain() -> None:
    verp = Verp(SECRET)
    mid = new_message_id(1_700_000_000.0)
    address = verp.address(verp.token(mid), DOMAIN)
    assert verp.parse(address.upper()) == mid
    assert verp.parse(address.replace(DOMAIN, "send2.other.example")) == mid
    assert verp.parse(address.partition("@")[0]) == mid


def test_secret_never_in_repr() -> None:
    verp = Verp(SECRET, "b")
    assert SECRET.hex() not in repr(verp) and repr(SECRET) not in repr(verp)


def test_bad_construction() -> None:
    with pytest.raises(ValueError):
        Verp(b"short")
    with pytest.raises(ValueError):
        Verp(SECRET, "B-")
    with pytest.raises(ValueError):
        Verp(SECRET, "p" * 17)


def test_from_file_creates_private_secret_once(tmp_path: Path) -> None:
    path = tmp_path / "state" / "verp.key"
    first = Verp.from_file(path, "b")
    assert path.stat().st_size == SECRET_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = Verp.from_file(path, "b", create=False)
    mid = new_message_id(1_700_000_000.0)
    assert second.parse(first.address(first.token(mid), DOMAIN)) == mid
    assert sorted(p.name for p in path.parent.iterdir()) == ["verp.key"]


def test_from_file_missing_without_create(tmp_path: Path) -> None:
    with pytest.raises(VerpKeyError) as info:
        Verp.from_file(tmp_path / "absent.key", "b", create=False)
    assert info.value.key_path == "verp.secret_file"
    assert not (tmp_path / "absent.key").exists()


def test_from_file_refuses_wrong_length(tmp_path: Path) -> None:
    path = tmp_path / "verp.key"
    path.write_bytes(b"x" * 31)
    path.chmod(0o600)  # private, as a secret must be (else that is the refusal)
    with pytest.raises(VerpKeyError) as info:
        Verp.from_file(path, "b")
    assert "31" in str(info.value)
    assert "x" * 31 not in str(info.value)


_CHILD = """
import sys
from pathlib import Path
from dispatcher.message.verp import Verp
v = Verp.from_file(Path(sys.argv[1]), "b")
print(v.token("m1"))
"""


def test_processes_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "verp.key"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, env=env, text=True
        )
        for _ in range(4)
    ]
    tokens = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(tokens) == 1
    assert Verp.from_file(path, "b").token("m1") in tokens
