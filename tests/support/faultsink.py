"""A real SMTP server on loopback whose misbehaviour each test chooses.

Rules map a phase ("greeting", "ehlo", "mail", "rcpt", "data", "body", "dot") to an action: a
reply line ("421 4.3.2 try later"), "drop" (close the connection), "silent" (never answer), or
any of these after "sleep SECONDS " (answer late). "body" strikes once the first line of the
message data has arrived, before the final dot: a reply there is an early reply (the
connection is closed after it). `in_data` holds the data of the message being received.
Every message is recorded with how it ended: "accepted" (2xx after the dot), "unacked" (whole
message received, connection dropped before a reply) or "refused".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

Action = str | Callable[[int], str | None]  # a callable gets the message number; None = default


@dataclass
class Received:
    peer: str
    mail_from: str
    rcpts: list[str]
    data: bytes
    ending: str  # accepted | unacked | refused
    reply: str = ""


@dataclass
class FaultSink:
    rules: dict[str, Action] = field(default_factory=dict)
    starttls: bool = False
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    peers: list[str] = field(default_factory=list)
    ehlo_names: list[str] = field(default_factory=list)
    port: int = 0
    in_data: bytes = b""  # the message being received (dot-stuffed), before its final dot
    _server: asyncio.AbstractServer | None = None
    _messages: int = 0

    async def start(self, host: str = "127.0.0.1") -> FaultSink:
        self._server = await asyncio.start_server(self._handle, host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def accepted(self) -> list[Received]:
        return [r for r in self.received if r.ending == "accepted"]

    def _action(self, phase: str) -> str | None:
        rule = self.rules.get(phase)
        if callable(rule):
            return rule(self._messages)
        return rule

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        peer = writer.get_extra_info("peername")[0]
        self.peers.append(peer)
        mail_from, rcpts = "", list[str]()
        last = [""]  # the last reply line sent

        async def reply(phase: str, default: str) -> bool:
            action = self._action(phase) or default
            if action.startswith("sleep "):  # "sleep 1.5 250 ok": answer late
                _, secs, action = action.split(" ", 2)
                await asyncio.sleep(float(secs))
            last[0] = action
            if action == "drop":
                writer.close()
                return False
            if action == "silent":
                await asyncio.sleep(3600)
                return False
            writer.write(action.encode() + b"\r\n")
            await writer.drain()
            return not action.startswith("421")

        try:
            if not await reply("greeting", "220 faultsink ESMTP"):
                return
            while True:
                line = await reader.readline()
                if not line:
                    return
                cmd = line.decode("utf-8", "replace").strip()
                verb = cmd.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    self.ehlo_names.append(cmd.split(" ", 1)[1] if " " in cmd else "")
                    action = self._action("ehlo")
                    if action:
                        if not await reply("ehlo", action):
                            return
                        continue
                    writer.write(
                        b"250-faultsink\r\n250-PIPELINING\r\n250-SMTPUTF8\r\n250 8BITMIME\r\n"
                    )
                    await writer.drain()
                elif verb == "MAIL":
                    mail_from, rcpts = cmd[10:].split(" ")[0].strip("<>"), []
                    if not await reply("mail", "250 2.1.0 ok"):
                        return
                elif verb == "RCPT":
                    rcpts.append(cmd[8:].split(" ")[0].strip("<>"))
                    if not await reply("rcpt", "250 2.1.5 ok"):
                        return
                elif verb == "DATA":
                    if not await reply("data", "354 go ahead"):
                        return
                    if not last[0].startswith("354"):
                        continue  # DATA refused: what follows are commands, not the message
                    chunks = []
                    self.in_data = b""
                    while True:
                        chunk = await reader.readline()
                        if not chunk:
                            return  # dropped mid-body: not a whole message
                        if chunk == b".\r\n":
                            break
                        self.in_data += chunk
                        if len(chunks) == 0 and self._action("body"):
                            await reply("body", "")
                            return
                        chunks.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                    self._messages += 1
                    rec = Received(peer, mail_from, rcpts, b"".join(chunks), "unacked")
                    self.received.append(rec)
                    action = self._action("dot") or "250 2.0.0 queued"
                    if action.split(" ")[-1] in ("drop", "silent"):
                        await reply("dot", action)
                        return
                    final = action.split(" ", 2)[2] if action.startswith("sleep ") else action
                    rec.ending = "accepted" if final.startswith("2") else "refused"
                    rec.reply = action
                    if not await reply("dot", action):
                        return
                elif verb == "RSET":
                    mail_from, rcpts = "", []
                    writer.write(b"250 2.0.0 reset\r\n")
                    await writer.drain()
                elif verb == "QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    return
                elif verb == "NOOP":
                    writer.write(b"250 2.0.0 ok\r\n")
                    await writer.drain()
                else:
                    writer.write(b"502 5.5.2 not implemented\r\n")
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()
