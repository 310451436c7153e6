"""Hygiene against local and remote strangers (issue 10, finding 9): remote text escaped in
logs, state folders 0700 and queue files 0600, exposed secrets refused at load."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from dispatcher.engine.runtime import Runtime
from dispatcher.message.verp import Verp, VerpKeyError
from queues.protocol import MessageState
from tests.support.engine import DEST, RuntimeFactory, make_config, payload
from tests.support.smtp_server import Raw, ServerFactory


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hygiene-keys")


async def test_remote_reply_text_is_escaped_in_logs(
    tmp_path: Path,
    key_dir: Path,
    smtp_server: ServerFactory,
    open_runtime: RuntimeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    forged = (
        b"550-5.7.1 blocked\r\n550 5.7.1 2026-01-01 INFO engine: delivered \x1b[2J\x1b]0;x\x07\r\n"
    )
    server = await smtp_server(mail=Raw(forged))
    config = make_config(tmp_path, routes={DEST: f"127.0.0.1:{server.port}"}, key_dir=key_dir)
    rt = await open_runtime(config)
    ids = [r.id for r in await rt.enqueue([payload(1)])]
    caplog.set_level(logging.WARNING)
    await rt.run(drain=True)
    assert [r.state for r in await rt.queue.get(ids)] == [MessageState.DEFERRED]
    lines = [r.getMessage() for r in caplog.records if "sender problem" in r.getMessage()]
    assert lines, caplog.text
    for line in lines:
        assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x07" not in line
        assert "blocked" in line  # still readable


async def test_state_folders_are_0700_and_queue_files_0600(
    tmp_path: Path, key_dir: Path, open_runtime: RuntimeFactory
) -> None:
    old = os.umask(0)  # the most permissive umask: the modes must not come from it
    try:
        config = make_config(tmp_path, key_dir=key_dir)
        rt = await open_runtime(config)
        await rt.enqueue([payload(1)])
        await rt.queue.register_worker()
    finally:
        os.umask(old)
    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    files = [p for p in state.rglob("*") if p.is_file()]
    assert any(p.name == "queue.db" for p in files), files
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, (p, oct(p.stat().st_mode))
    for d in [p for p in state.rglob("*") if p.is_dir()]:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_an_exposed_verp_secret_is_refused_unless_allowed(tmp_path: Path) -> None:
    secret = tmp_path / "verp.key"
    Verp.from_file(secret, "b")  # created 0600
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    secret.chmod(0o640)
    with pytest.raises(VerpKeyError) as info:
        Verp.from_file(secret, "b")
    assert info.value.key_path == "verp.secret_file"
    assert "readable by group or others (mode 640)" in str(info.value)
    link = tmp_path / "mounted.key"  # secret mounts are symlinks: the target is checked
    link.symlink_to(secret)
    with pytest.raises(VerpKeyError):
        Verp.from_file(link, "b")
    assert Verp.from_file(link, "b", allow_insecure=True) is not None
    secret.chmod(0o600)
    assert Verp.from_file(link, "b") is not None


async def test_security_allow_insecure_permissions_reaches_the_runtime(
    tmp_path: Path, key_dir: Path
) -> None:
    from dataclasses import replace

    from dispatcher.config import SecurityConfig

    config = make_config(tmp_path, key_dir=key_dir)
    config.verp.secret_file.parent.mkdir(parents=True, exist_ok=True)
    config.verp.secret_file.write_bytes(os.urandom(32))
    config.verp.secret_file.chmod(0o644)
    with pytest.raises(VerpKeyError):
        await Runtime.open(config)
    allowed = replace(config, security=SecurityConfig(allow_insecure_permissions=True))
    rt = await Runtime.open(allowed)
    await rt.close()
