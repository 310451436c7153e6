"""The naive sender: what a user would write without maildispatch.

aiosmtplib, a fixed number of concurrent tasks, and either a new connection per message
(`baseline`, `calibrate`) or one connection per task (`latency-naive`); optionally a DKIM
signature per message with `dkim.sign()` from dkimpy (pure-Python RSA, ~10 ms each).
Rendering the messages is upstream work and happens before the clock starts; signing is the
sender's work and is timed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiosmtplib

from bench.measure import measured, phase, write_enqueue_times
from bench.message import AUTHOR_DOMAIN, StandardMessage, render
from bench.spec import SOURCE_IPS, WorkerResult, WorkerSpec

SELECTOR = b"bench"
_SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version"]


def _rsa_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


class NaiveSender:
    """Sends `messages` from `concurrency` tasks; counts what was accepted."""

    def __init__(self, spec: WorkerSpec, messages: list[StandardMessage]) -> None:
        self.spec = spec
        self.messages = messages
        self.pem = _rsa_pem() if spec.dkim else b""
        self.sent = 0
        self.errors = 0
        self.first_error = ""

    def _data(self, msg: StandardMessage) -> bytes:
        if not self.pem:
            return msg.data
        import dkim

        sig: bytes = dkim.sign(
            msg.data,
            SELECTOR,
            AUTHOR_DOMAIN.encode(),
            self.pem,
            include_headers=_SIGNED_HEADERS,
        )
        return sig + msg.data

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = repr(exc)

    async def _one_per_connection(self, work: Iterator[StandardMessage], source: str) -> None:
        spec = self.spec
        for msg in work:
            try:
                await aiosmtplib.send(
                    self._data(msg),
                    sender=msg.sender,
                    recipients=[msg.rcpt],
                    hostname=spec.host,
                    port=spec.port,
                    local_hostname="naive.bench.example",
                    source_address=(source, 0),
                    start_tls=spec.tls,
                    validate_certs=False,
                )
                self.sent += 1
            except (aiosmtplib.SMTPException, OSError) as e:
                self._failed(e)

    async def _reusing(self, work: Iterator[StandardMessage], source: str) -> None:
        spec = self.spec
        client = aiosmtplib.SMTP(
            hostname=spec.host,
            port=spec.port,
            local_hostname="naive.bench.example",
            source_address=(source, 0),
            start_tls=spec.tls,
            validate_certs=False,
        )
        try:
            await client.connect()
            for msg in work:
                try:
                    await client.sendmail(msg.sender, [msg.rcpt], self._data(msg))
                    self.sent += 1
                except aiosmtplib.SMTPResponseException as e:
                    self._failed(e)
            await client.quit()
        except (aiosmtplib.SMTPException, OSError) as e:
            self._failed(e)

    async def run(self) -> None:
        work = iter(self.messages)  # shared: each task takes the next message
        task = self._reusing if self.spec.reuse else self._one_per_connection
        await asyncio.gather(
            *(
                task(work, SOURCE_IPS[i % len(SOURCE_IPS)])
                for i in range(min(self.spec.concurrency, len(self.messages)))
            )
        )


async def run_naive(spec: WorkerSpec, result: WorkerResult) -> None:
    """Render, then time the sending of every message."""
    phase("prepare")
    messages = [render(i, spec.run_id, spec.size) for i in range(spec.messages)]
    sender = NaiveSender(spec, messages)
    phase("run")
    # No queue: every message is handed over when the clock starts.
    write_enqueue_times(spec.enqueue_path, [(m.rcpt, time.time()) for m in messages])
    await measured(spec, result, sender.run)
    result.sent, result.errors, result.first_error = sender.sent, sender.errors, sender.first_error
    result.outcomes = {"delivered": sender.sent, "error": sender.errors}
