"""The one error type of configuration: `ConfigError`, naming the key path."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value is missing or wrong; `key_path` names it (e.g. `pools[0].ips[1].address`)."""

    code = "config_error"

    def __init__(self, key_path: str, message: str) -> None:
        super().__init__(f"{key_path}: {message}" if key_path else message)
        self.key_path = key_path
        self.reason = message
