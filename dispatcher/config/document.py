"""The whole of config.toml: `Config`, and `parse_config` reading it section by section."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispatcher.config import accounts as accounts_section
from dispatcher.config import api as api_section
from dispatcher.config import automation as automation_section
from dispatcher.config import categories as categories_section
from dispatcher.config import coordination as coordination_section
from dispatcher.config import dispatch as dispatch_section
from dispatcher.config import dkim as dkim_section
from dispatcher.config import events as events_section
from dispatcher.config import log as log_section
from dispatcher.config import metrics as metrics_section
from dispatcher.config import pools as pools_section
from dispatcher.config import providers as providers_section
from dispatcher.config import queue as queue_section
from dispatcher.config import routes as routes_section
from dispatcher.config import routing as routing_section
from dispatcher.config import security as security_section
from dispatcher.config import shaping as shaping_section
from dispatcher.config import smtp as smtp_section
from dispatcher.config import streams as streams_section
from dispatcher.config import verp as verp_section
from dispatcher.config import warmup as warmup_section
from dispatcher.config.accounts import AccountConfig
from dispatcher.config.api import ApiConfig
from dispatcher.config.context import DEFAULT_STATE_DIR, ParseContext
from dispatcher.config.coordination import CoordinationConfig
from dispatcher.config.dispatch import DispatchConfig
from dispatcher.config.dkim import DkimConfig
from dispatcher.config.errors import ConfigError
from dispatcher.config.events import EventsConfig, WebhooksConfig
from dispatcher.config.log import LogConfig
from dispatcher.config.metrics import MetricsConfig
from dispatcher.config.queue import QueueConfig
from dispatcher.config.routing import RoutingConfig
from dispatcher.config.security import SecurityConfig
from dispatcher.config.smtp import SmtpConfig
from dispatcher.config.streams import StreamConfig
from dispatcher.config.table import Section, Table, field_default
from dispatcher.config.values import Route
from dispatcher.config.verp import VerpConfig
from ip_pools.automation import AutomationRule
from ip_pools.categories import CategoryTable
from ip_pools.model import PoolSpec
from ip_pools.providers import Provider
from ip_pools.shaping import Shaping
from ip_pools.warmup import WarmupSchedule

TOP = Section("", ("state_dir", "feedback_sender_id"))


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
    log: LogConfig = field(default_factory=LogConfig)
    feedback_sender_id: str = "maildispatch"
    state_dir: Path = DEFAULT_STATE_DIR
    source: Path | None = None
    # Reply categories: [[categories]] overrides first, then the defaults.
    categories: CategoryTable = field(default_factory=CategoryTable)
    # [[automation]]: reply -> slow or pause one (IP, provider), first match wins.
    automation: tuple[AutomationRule, ...] = ()
    api: ApiConfig = field(default_factory=ApiConfig)
    coordination: CoordinationConfig = field(default_factory=CoordinationConfig)
    # Deliverability: providers, shaping per (source IP, provider), warmup schedules.
    providers: tuple[Provider, ...] = ()
    shaping: Shaping = field(default_factory=Shaping)
    warmup: Mapping[str, WarmupSchedule] = field(default_factory=dict)
    events: EventsConfig = field(default_factory=EventsConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)

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
        raise ConfigError(field="", reason=f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(field="", reason=f"{p}: not valid TOML: {e}") from None
    return parse_config(raw, base_dir=p.resolve().parent, source=p.resolve())


def parse_config(raw: Mapping[str, Any], base_dir: Path, source: Path | None = None) -> Config:
    """Validate an already-parsed TOML document, section by section (errors name key paths)."""
    top = Table(raw, "", TOP)
    state_dir = top.text("state_dir", str(field_default(Config, "state_dir")))
    ctx = ParseContext(base_dir, ParseContext(base_dir, base_dir).resolve(state_dir))
    feedback_sender_id = top.text("feedback_sender_id", field_default(Config, "feedback_sender_id"))

    queue = queue_section.parse_queue(top.table(queue_section.SECTION), ctx)
    dispatch = dispatch_section.parse_dispatch(top.table(dispatch_section.SECTION))
    smtp = smtp_section.parse_smtp(top.table(smtp_section.SECTION))
    verp = verp_section.parse_verp(top.table(verp_section.SECTION), ctx)
    dkim = dkim_section.parse_dkim(top.table(dkim_section.SECTION), ctx)
    key_domains = {key.domain for key in dkim.keys}
    providers = providers_section.parse_providers(top)
    provider_names = {p.name for p in providers}
    shaping = shaping_section.parse_shaping(
        top.table(shaping_section.SECTION), provider_names, dispatch
    )
    warmup = warmup_section.parse_warmup(top.table(warmup_section.SECTION), provider_names)
    pools = pools_section.parse_pools(top, key_domains, warmup)
    accounts = accounts_section.parse_accounts(top, key_domains, [p.name for p in pools])
    streams = streams_section.parse_streams(top.table(streams_section.SECTION))
    routes = routes_section.parse_routes(top.table(routes_section.SECTION))
    routing = routing_section.parse_routing(top.table(routing_section.SECTION))
    security = security_section.parse_security(top.table(security_section.SECTION))
    categories = categories_section.parse_categories(top)
    automation = automation_section.parse_automation(top)
    metrics = metrics_section.parse_metrics(top.table(metrics_section.SECTION))
    log = log_section.parse_log(top.table(log_section.SECTION))
    api = api_section.parse_api(top.table(api_section.SECTION))
    coordination = coordination_section.parse_coordination(top.table(coordination_section.SECTION))
    events = events_section.parse_events(top.table(events_section.EVENTS_SECTION))
    webhooks = events_section.parse_webhooks(top.table(events_section.WEBHOOKS_SECTION))
    top.done()

    return Config(
        queue=queue,
        dispatch=dispatch,
        smtp=smtp,
        verp=verp,
        dkim=dkim,
        accounts=accounts,
        pools=pools,
        streams=streams,
        routes=routes,
        routing=routing,
        security=security,
        metrics=metrics,
        log=log,
        feedback_sender_id=feedback_sender_id,
        state_dir=ctx.state_dir,
        source=source,
        categories=categories,
        automation=automation,
        api=api,
        coordination=coordination,
        providers=providers,
        shaping=shaping,
        warmup=warmup,
        events=events,
        webhooks=webhooks,
    )
