"""Configuration: one `config.toml`, parsed with tomllib into frozen, typed objects.

Owns the shape of the file: one module per section (`queue`, `dispatch`, `smtp`, `verp`,
`dkim`, `providers`, `shaping`, `warmup`, `pools`, `accounts`, `streams`, `routes`,
`routing`, `security`, `metrics`, `log`), each declaring its keys (`table.SECTIONS`,
compared with docs/configuration.md by a test) and holding its defaults on its frozen type,
once. Every error is a `ConfigError` naming its key path, e.g. `pools[0].ips[1].address`;
relative paths resolve against the config file's folder; secrets (DSN passwords, key
material) never appear in errors or reprs. It never imports the rest of the dispatcher,
opens a socket or reads a key file.
"""

from __future__ import annotations

from dispatcher.config.accounts import AccountConfig
from dispatcher.config.api import ApiConfig
from dispatcher.config.coordination import CoordinationConfig, OnUnavailable
from dispatcher.config.dispatch import DispatchConfig
from dispatcher.config.dkim import Canonicalization, DkimConfig, DkimKeyConfig, KeyType
from dispatcher.config.document import Config, load_config, parse_config
from dispatcher.config.errors import ConfigError
from dispatcher.config.events import EventsConfig, WebhooksConfig
from dispatcher.config.log import LogConfig, LogFormat, LogLevel
from dispatcher.config.metrics import MetricsConfig
from dispatcher.config.queue import Backend, QueueConfig, Synchronous
from dispatcher.config.routing import RoutingConfig
from dispatcher.config.security import SecurityConfig
from dispatcher.config.smtp import Client, SmtpConfig, StartTls
from dispatcher.config.streams import STREAM_DEFAULTS, Ambiguous, StreamConfig
from dispatcher.config.values import Route, check_domain, parse_duration
from dispatcher.config.verp import VerpConfig

__all__ = [
    "STREAM_DEFAULTS",
    "AccountConfig",
    "Ambiguous",
    "ApiConfig",
    "Backend",
    "Canonicalization",
    "Client",
    "Config",
    "ConfigError",
    "CoordinationConfig",
    "DispatchConfig",
    "DkimConfig",
    "DkimKeyConfig",
    "EventsConfig",
    "KeyType",
    "LogConfig",
    "LogFormat",
    "LogLevel",
    "MetricsConfig",
    "OnUnavailable",
    "QueueConfig",
    "Route",
    "RoutingConfig",
    "SecurityConfig",
    "SmtpConfig",
    "StartTls",
    "StreamConfig",
    "Synchronous",
    "VerpConfig",
    "WebhooksConfig",
    "check_domain",
    "load_config",
    "parse_config",
    "parse_duration",
]
