"""`maildispatch accounts ...` and the seeding by `db migrate`, on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dispatcher.cli.main import main
from tests.support.api import AUTHOR, pg_dsn, write_config

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(params=BACKENDS)
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "postgres":
        return write_config(tmp_path, backend="postgres", dsn=pg_dsn(migrated=False))
    return write_config(tmp_path)


def test_migrate_seeds_config_accounts_once(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "db", "migrate", "--config", str(config))[0] == 0
    code, out, _ = cli(capsys, "accounts", "list", "--json", "--config", str(config))
    seeded = json.loads(out)
    assert code == 0
    assert [(a["id"], a["name"], a["config_seeded"], a["trusted"]) for a in seeded] == [
        ("acme", "acme", True, True),
        ("creator", "creator", True, True),
    ]
    # Renamed and paused by an operator: a second migrate (a restart) changes nothing.
    assert cli(capsys, "accounts", "rename", "acme", "Acme Inc", "--config", str(config))[0] == 0
    assert cli(capsys, "accounts", "pause", "Acme Inc", "--config", str(config))[0] == 0
    assert cli(capsys, "db", "migrate", "--config", str(config))[0] == 0
    code, out, _ = cli(capsys, "accounts", "show", "acme", "--json", "--config", str(config))
    shown = json.loads(out)
    assert (shown["id"], shown["name"], shown["status"]) == ("acme", "Acme Inc", "paused")


def test_create_key_show_rename_revoke(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "db", "migrate", "--config", str(config))[0] == 0
    code, out, _ = cli(
        capsys,
        "accounts", "create", "Newsletter Co", "--author-domain", AUTHOR, "--json",
        "--config", str(config),
    )  # fmt: skip
    made = json.loads(out)
    assert code == 0 and made["id"].startswith("acc_") and made["config_seeded"] is False
    assert made["author_domains"] == [AUTHOR] and made["trusted"] is False

    code, token, err = cli(
        capsys, "accounts", "key", "create", made["id"], "--scope", "full", "--config", str(config)
    )
    token = token.strip()
    assert code == 0 and token.startswith("mdk_key_") and "shown only now" in err
    code, out, _ = cli(
        capsys, "accounts", "show", "Newsletter Co", "--json", "--config", str(config)
    )
    shown = json.loads(out)
    assert len(shown["keys"]) == 1 and shown["keys"][0]["scope"] == "full"
    assert token not in out  # only the hash is stored, and not even that is shown
    key_id = shown["keys"][0]["id"]

    assert cli(capsys, "accounts", "rename", made["id"], "Renamed", "--config", str(config))[0] == 0
    code, out, _ = cli(capsys, "accounts", "show", "Renamed", "--json", "--config", str(config))
    assert json.loads(out)["id"] == made["id"]

    assert (
        cli(capsys, "accounts", "key", "revoke", "Renamed", key_id, "--config", str(config))[0] == 0
    )
    code, _, err = cli(
        capsys, "accounts", "key", "revoke", "Renamed", key_id, "--config", str(config)
    )
    assert code == 2 and "no active key" in err


def test_create_refuses_a_domain_without_a_dkim_key(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "db", "migrate", "--config", str(config))[0] == 0
    code, _, err = cli(
        capsys,
        "accounts", "create", "x", "--author-domain", "unsigned.example", "--config", str(config),
    )  # fmt: skip
    assert code == 2 and "author_domains[0]" in err and "dkim" in err
    code, _, err = cli(capsys, "accounts", "create", "acme", "--config", str(config))
    assert code == 2 and "exists" in err
    code, _, err = cli(capsys, "accounts", "show", "nobody", "--config", str(config))
    assert code == 2 and "nobody" in err


def test_purge_cancels_every_waiting_message(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli(capsys, "db", "migrate", "--config", str(config))[0] == 0
    batch = tmp_path / "batch.jsonl"
    lines = [
        json.dumps(
            {"account": "acme", "from": f"n@{AUTHOR}", "to": f"r{i}@dest.example",
             "subject": "s", "text": "t", "campaign": "c1" if i % 2 else "c2",
             "idempotency_key": f"k{i}"}
        )
        for i in range(6)
    ]  # fmt: skip
    batch.write_text("\n".join(lines) + "\n")
    assert cli(capsys, "enqueue", str(batch), "--config", str(config))[0] == 0
    code, out, _ = cli(
        capsys, "accounts", "purge", "acme", "--campaign", "c1", "--json", "--config", str(config)
    )
    assert code == 0 and json.loads(out)["cancelled"] == 3
    code, out, _ = cli(capsys, "accounts", "purge", "acme", "--config", str(config))
    assert (code, out.strip()) == (0, "acme: 3 waiting messages cancelled")
    code, out, _ = cli(capsys, "accounts", "purge", "nobody", "--config", str(config))
    assert code != 0
