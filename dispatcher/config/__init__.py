"""`config.toml` parsed with tomllib into frozen, typed objects.

Every error is a `ConfigError` naming its key path, e.g. `pools[0].ips[1].address`.
Relative paths are resolved against the config file's folder. Secrets (DSN passwords,
key material) are never put into error messages or reprs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import idna

from ip_pools.categories import CategoryRule, CategoryRuleError, CategoryTable
from ip_pools.model import PlatformDomain, PoolSpec, SourceIp


class ConfigError(ValueError):
    """A config value is missing or wrong; `key_path` names it."""

    code = "config_error"

    def __init__(self, key_path: str, message: str) -> None:
        super().__init__(f"{key_path}: {message}" if key_path else message)
        self.key_path = key_path
        self.reason = message


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


def parse_duration(value: object, key_path: str) -> float:
    """`30`, `"30s"`, `"5m"`, `"7d"` -> seconds."""
    if isinstance(value, bool):
        raise ConfigError(key_path, "expected a duration such as 30s, 5m or 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(key_path, "must not be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ConfigError(key_path, f"expected a duration such as 30s, 5m or 7d, got {value!r}")


def check_domain(value: object, key_path: str) -> str:
    """A lower-cased DNS name (IDNA-encoded when given in Unicode)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(key_path, "expected a domain name")
    try:
        # UTS 46 / IDNA 2008 (as recipient domains): the stdlib codec is IDNA 2003.
        name = idna.encode(value.strip().lower(), uts46=True).decode("ascii")
    except (UnicodeError, idna.IDNAError):
        raise ConfigError(key_path, f"not a valid domain name: {value!r}") from None
    if not _DOMAIN.match(name):
        raise ConfigError(key_path, f"not a valid domain name: {value!r}")
    return name


class _Table:
    """Reads one TOML table, tracking key paths and refusing unknown keys."""

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(path, "expected a table")
        self.data: Mapping[str, Any] = data
        self.path = path
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def raw(self, name: str, default: object = None) -> Any:
        self._seen.add(name)
        return self.data.get(name, default)

    def has(self, name: str) -> bool:
        return name in self.data

    def text(self, name: str, default: str | None = None, *, required: bool = False) -> str:
        v = self.raw(name, default)
        if v is None and required:
            raise ConfigError(self.key(name), "is required")
        if v is None:
            return ""
        if not isinstance(v, str):
            raise ConfigError(self.key(name), f"expected a string, got {type(v).__name__}")
        return v

    def integer(self, name: str, default: int, *, minimum: int | None = None) -> int:
        v = self.raw(name, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(self.key(name), f"expected an integer, got {v!r}")
        if minimum is not None and v < minimum:
            raise ConfigError(self.key(name), f"must be at least {minimum}")
        return v

    def number(self, name: str, default: float) -> float:
        v = self.raw(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(self.key(name), f"expected a number, got {v!r}")
        return float(v)

    def flag(self, name: str, default: bool) -> bool:
        v = self.raw(name, default)
        if not isinstance(v, bool):
            raise ConfigError(self.key(name), f"expected true or false, got {v!r}")
        return v

    def duration(self, name: str, default: float | str) -> float:
        return parse_duration(self.raw(name, default), self.key(name))

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        v = self.text(name, default)
        if v not in choices:
            raise ConfigError(self.key(name), f"must be one of {', '.join(choices)}; got {v!r}")
        return v

    def table(self, name: str) -> _Table:
        return _Table(self.raw(name, {}), self.key(name))

    def tables(self, name: str) -> list[_Table]:
        v = self.raw(name, [])
        if not isinstance(v, list):
            raise ConfigError(self.key(name), "expected an array of tables")
        return [_Table(item, f"{self.key(name)}[{i}]") for i, item in enumerate(v)]

    def done(self) -> None:
        extra = sorted(set(self.data) - self._seen)
        if extra:
            raise ConfigError(self.key(extra[0]), "unknown key")


@dataclass(frozen=True, slots=True)
class QueueConfig:
    backend: str = "sqlite"
    path: Path = Path("state/queue.db")
    dsn: str = field(default="", repr=False)  # may hold a password: never logged
    idempotency_retention: float = 7 * 86400.0
    retention: float = 30 * 86400.0
    # SQLite PRAGMA synchronous: FULL survives power loss; NORMAL survives a process crash.
    synchronous: str = "FULL"
    # A worker whose heartbeat stops this long loses its messages to recovery (PostgreSQL;
    # on SQLite the kernel's lock on a dead process decides first).
    lease_ttl: float = 30.0


@dataclass(frozen=True, slots=True)
class StreamConfig:
    name: str
    max_age: float
    # What happens to a message whose outcome is unknowable: "hold" (default) or "retry".
    ambiguous: str = "hold"
    require_unsubscribe: bool = False


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    claim_batch: int = 500
    max_sessions: int = 100
    sessions_per_host: int = 20
    messages_per_session: int = 200
    max_message_bytes: int = 10 * 1024 * 1024
    mark_interval: float = 0.0  # 0: group commit without a fixed wait
    outcome_interval: float = 0.02
    poll_interval: float = 0.5
    shutdown_timeout: float = 30.0
    max_attempts: int = 30
    retry_schedule: tuple[float, ...] = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    # The reply to the final dot is awaited patiently (RFC 5321 4.5.3.2.6: 10 minutes).
    data_timeout: float = 600.0
    starttls: str = "opportunistic"  # or "never"
    client: str = "pipelining"  # RFC 2920, 2 round trips per message; or "aiosmtplib"
    # Pipelining client only: the next message's MAIL/RCPT/DATA ride with this one's dot.
    send_ahead: bool = True
    circuit_failures: int = 3
    circuit_open_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class VerpConfig:
    prefix: str = "b"
    secret_file: Path = Path("state/verp.key")


@dataclass(frozen=True, slots=True)
class DkimKeyConfig:
    domain: str
    selector: str
    file: Path
    key_type: str = "rsa"  # or "ed25519"
    active_from: float = 0.0
    public_key: str | None = None  # the published TXT p= value, checked against the key
    key_path: str = ""  # where in config.toml this key was declared, for errors


@dataclass(frozen=True, slots=True)
class DkimConfig:
    canonicalization: str = "relaxed/relaxed"
    create_missing: bool = False  # demo: create absent key files on first run
    keys: tuple[DkimKeyConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class AccountConfig:
    name: str
    author_domains: tuple[str, ...]
    pool: str
    allow_broadcast_without_unsubscribe: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration; `source` is the file it came from (None when built in code)."""

    queue: QueueConfig
    dispatch: DispatchConfig
    smtp: SmtpConfig
    verp: VerpConfig
    dkim: DkimConfig
    accounts: tuple[AccountConfig, ...]
    pools: tuple[PoolSpec, ...]
    streams: Mapping[str, StreamConfig]
    routes: Mapping[str, tuple[Route, ...]]
    metrics: MetricsConfig
    feedback_sender_id: str = "maildispatch"
    state_dir: Path = Path("state")
    source: Path | None = None
    # Reply categories: [[categories]] overrides first, then the defaults.
    categories: CategoryTable = field(default_factory=CategoryTable)

    def account(self, name: str) -> AccountConfig | None:
        for a in self.accounts:
            if a.name == name:
                return a
        return None

    def pool(self, name: str) -> PoolSpec | None:
        for p in self.pools:
            if p.name == name:
                return p
        return None


def load_config(path: str | Path) -> Config:
    """Read and validate `path`; raises ConfigError naming the key path."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("", f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{p}: not valid TOML: {e}") from None
    return parse_config(raw, base_dir=p.resolve().parent, source=p.resolve())


def _route(value: object, key_path: str) -> Route:
    if not isinstance(value, str) or not value:
        raise ConfigError(key_path, "expected HOST:PORT")
    host, sep, port_s = value.rpartition(":")
    if not sep:
        host, port_s = value, "25"
    host = host.strip("[]")
    if not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ConfigError(key_path, f"expected HOST:PORT, got {value!r}")
    return Route(host=host, port=int(port_s))


def _timestamp(value: object, key_path: str) -> float:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.timestamp()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return _timestamp(dt.datetime.fromisoformat(value.replace("Z", "+00:00")), key_path)
        except ValueError:
            pass
    raise ConfigError(key_path, f"expected a date-time such as 2026-01-01T00:00:00Z, got {value!r}")


def parse_config(raw: Mapping[str, Any], base_dir: Path, source: Path | None = None) -> Config:
    """Validate an already-parsed TOML document."""
    top = _Table(raw, "")

    def resolve(p: str) -> Path:
        path = Path(p)
        return path if path.is_absolute() else (base_dir / path)

    state_dir = resolve(top.text("state_dir", "state"))
    feedback_sender_id = top.text("feedback_sender_id", "maildispatch")

    q = top.table("queue")
    backend = q.choice("backend", "sqlite", ("sqlite", "postgres"))
    queue = QueueConfig(
        backend=backend,
        path=resolve(q.text("path", str(state_dir / "queue.db"))),
        dsn=q.text("dsn", ""),
        idempotency_retention=q.duration("idempotency_retention", "7d"),
        retention=q.duration("retention", "30d"),
        synchronous=q.choice("synchronous", "FULL", ("FULL", "NORMAL")),
        lease_ttl=q.duration("lease_ttl", "30s"),
    )
    if queue.lease_ttl < 1.0:
        raise ConfigError("queue.lease_ttl", "must be at least 1s")
    if backend == "postgres" and not queue.dsn:
        raise ConfigError("queue.dsn", "is required when queue.backend is postgres")
    q.done()

    d = top.table("dispatch")
    sched_raw = d.raw("retry_schedule", ["1m", "5m", "15m", "30m", "1h", "2h", "4h"])
    if not isinstance(sched_raw, list) or not sched_raw:
        raise ConfigError("dispatch.retry_schedule", "expected a non-empty list of durations")
    dispatch = DispatchConfig(
        claim_batch=d.integer("claim_batch", 500, minimum=1),
        max_sessions=d.integer("max_sessions", 100, minimum=1),
        sessions_per_host=d.integer("sessions_per_host", 20, minimum=1),
        messages_per_session=d.integer("messages_per_session", 200, minimum=1),
        max_message_bytes=d.integer("max_message_bytes", 10 * 1024 * 1024, minimum=1024),
        mark_interval=d.duration("mark_interval", "0s"),
        outcome_interval=d.duration("outcome_interval", "20ms"),
        poll_interval=d.duration("poll_interval", "500ms"),
        shutdown_timeout=d.duration("shutdown_timeout", "30s"),
        max_attempts=d.integer("max_attempts", 30, minimum=1),
        retry_schedule=tuple(
            parse_duration(v, f"dispatch.retry_schedule[{i}]") for i, v in enumerate(sched_raw)
        ),
    )
    d.done()

    s = top.table("smtp")
    smtp = SmtpConfig(
        connect_timeout=s.duration("connect_timeout", "10s"),
        command_timeout=s.duration("command_timeout", "60s"),
        data_timeout=s.duration("data_timeout", "10m"),
        starttls=s.choice("starttls", "opportunistic", ("opportunistic", "never")),
        client=s.choice("client", "pipelining", ("pipelining", "aiosmtplib")),
        send_ahead=s.flag("send_ahead", True),
        circuit_failures=s.integer("circuit_failures", 3, minimum=1),
        circuit_open_seconds=s.duration("circuit_open_seconds", "30s"),
    )
    s.done()

    v = top.table("verp")
    prefix = v.text("prefix", "b")
    if not re.fullmatch(r"[a-z0-9]{1,16}", prefix):
        raise ConfigError("verp.prefix", "expected 1 to 16 lower-case letters or digits")
    verp = VerpConfig(
        prefix=prefix, secret_file=resolve(v.text("secret_file", str(state_dir / "verp.key")))
    )
    v.done()

    k = top.table("dkim")
    canon = k.choice(
        "canonicalization",
        "relaxed/relaxed",
        ("relaxed/relaxed", "relaxed/simple", "simple/simple", "simple/relaxed"),
    )
    keys: list[DkimKeyConfig] = []
    for kt in k.tables("keys"):
        sel = kt.text("selector", required=True)
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})", sel):
            raise ConfigError(kt.key("selector"), f"not a valid selector: {sel!r}")
        keys.append(
            DkimKeyConfig(
                domain=check_domain(kt.text("domain", required=True), kt.key("domain")),
                selector=sel,
                file=resolve(kt.text("file", required=True)),
                key_type=kt.choice("type", "rsa", ("rsa", "ed25519")),
                active_from=_timestamp(kt.raw("active_from", 0), kt.key("active_from")),
                public_key=kt.text("public_key", "") or None,
                key_path=kt.path,
            )
        )
        kt.done()
    dkim_cfg = DkimConfig(
        canonicalization=canon, create_missing=k.flag("create_missing", False), keys=tuple(keys)
    )
    k.done()
    key_domains = {key.domain for key in keys}

    pools: list[PoolSpec] = []
    for pt in top.tables("pools"):
        name = pt.text("name", required=True)
        ips: list[SourceIp] = []
        for it in pt.tables("ips"):
            addr = it.text("address", required=True)
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise ConfigError(it.key("address"), "not an IP address") from None
            ehlo = check_domain(it.text("ehlo", required=True), it.key("ehlo"))
            weight = it.integer("weight", 1, minimum=0)
            ips.append(SourceIp(address=addr, ehlo=ehlo, weight=weight))
            it.done()
        if not ips:
            raise ConfigError(pt.key("ips"), "a pool needs at least one source IP")
        if len({ip.address for ip in ips}) != len(ips):
            raise ConfigError(pt.key("ips"), "the same address is listed twice")
        doms: list[PlatformDomain] = []
        for dt_ in pt.tables("domains"):
            dom = check_domain(dt_.text("domain", required=True), dt_.key("domain"))
            sign = dt_.flag("sign", True)
            if sign and dom not in key_domains:
                raise ConfigError(dt_.key("sign"), f"no [[dkim.keys]] entry for {dom}")
            doms.append(
                PlatformDomain(domain=dom, weight=dt_.integer("weight", 1, minimum=0), sign=sign)
            )
            dt_.done()
        if not doms:
            raise ConfigError(
                pt.key("domains"), "a pool needs at least one platform sending domain"
            )
        if not any(i.weight for i in ips):
            raise ConfigError(pt.key("ips"), "at least one source IP needs a weight above 0")
        if not any(dd.weight for dd in doms):
            raise ConfigError(pt.key("domains"), "at least one domain needs a weight above 0")
        pools.append(PoolSpec(name=name, ips=tuple(ips), domains=tuple(doms)))
        pt.done()
    if not pools:
        raise ConfigError("pools", "at least one [[pools]] entry is required")
    pool_names = [p.name for p in pools]
    if len(set(pool_names)) != len(pool_names):
        raise ConfigError("pools", "pool names must be unique")

    accounts: list[AccountConfig] = []
    for at in top.tables("accounts"):
        name = at.text("name", required=True)
        doms_raw = at.raw("author_domains", [])
        if not isinstance(doms_raw, list) or not doms_raw:
            raise ConfigError(at.key("author_domains"), "expected a non-empty list of domains")
        author = tuple(
            check_domain(x, f"{at.key('author_domains')}[{i}]") for i, x in enumerate(doms_raw)
        )
        for i, dom in enumerate(author):
            if dom not in key_domains:
                raise ConfigError(
                    f"{at.key('author_domains')}[{i}]",
                    f"no [[dkim.keys]] entry for author domain {dom}",
                )
        pool = at.text("pool", pool_names[0])
        if pool not in pool_names:
            raise ConfigError(at.key("pool"), f"no pool named {pool!r}")
        accounts.append(
            AccountConfig(
                name=name,
                author_domains=author,
                pool=pool,
                allow_broadcast_without_unsubscribe=at.flag(
                    "allow_broadcast_without_unsubscribe", False
                ),
            )
        )
        at.done()
    if len({a.name for a in accounts}) != len(accounts):
        raise ConfigError("accounts", "account names must be unique")

    st = top.table("streams")
    streams: dict[str, StreamConfig] = {}
    defaults = {"transactional": "1d", "broadcast": "3d"}
    for sname in ("transactional", "broadcast"):
        t = st.table(sname)
        streams[sname] = StreamConfig(
            name=sname,
            max_age=t.duration("max_age", defaults[sname]),
            ambiguous=t.choice("ambiguous", "hold", ("hold", "retry")),
            require_unsubscribe=t.flag("require_unsubscribe", sname == "broadcast"),
        )
        t.done()
    st.done()

    rt = top.table("routes")
    routes: dict[str, tuple[Route, ...]] = {}
    for dom_raw, val in rt.data.items():
        key = rt.key(f'"{dom_raw}"')
        dom = check_domain(dom_raw, key)
        vals = val if isinstance(val, list) else [val]
        if not vals:
            raise ConfigError(key, "expected HOST:PORT or a list of them")
        routes[dom] = tuple(_route(x, f"{key}[{i}]") for i, x in enumerate(vals))
        rt.raw(dom_raw)
    rt.done()

    categories = _categories(top)

    m = top.table("metrics")
    metrics = MetricsConfig(listen=m.text("listen", ""))
    if metrics.listen:
        _route(metrics.listen, "metrics.listen")
    m.done()
    top.done()

    return Config(
        queue=queue,
        dispatch=dispatch,
        smtp=smtp,
        verp=verp,
        dkim=dkim_cfg,
        accounts=tuple(accounts),
        pools=tuple(pools),
        streams=streams,
        routes=routes,
        metrics=metrics,
        feedback_sender_id=feedback_sender_id,
        state_dir=state_dir,
        source=source,
        categories=categories,
    )


def _categories(top: _Table) -> CategoryTable:
    """`[[categories]]`: operators' rules, matched before the defaults (first match wins)."""
    rules: list[CategoryRule] = []
    for ct in top.tables("categories"):
        code = ct.raw("code")
        if code is not None and (isinstance(code, bool) or not isinstance(code, int | str)):
            raise ConfigError(ct.key("code"), f'expected 550, "5xx" or "none", got {code!r}')
        enhanced = ct.text("enhanced") or None
        pattern = ct.text("match") if ct.has("match") else None
        try:
            rules.append(
                CategoryRule.build(
                    ct.text("category", required=True),
                    code=code,
                    enhanced=enhanced,
                    pattern=pattern,
                )
            )
        except CategoryRuleError as e:
            raise ConfigError(ct.key(e.field), e.reason) from None
        ct.done()
    return CategoryTable(rules)
