"""The one error type of configuration: `ConfigError`, naming the key path."""

from __future__ import annotations

from dispatcher.errors import InvalidInput


class ConfigError(InvalidInput):
    """A config value is missing or wrong; `field` is its key path (`pools[0].ips[1].address`,
    or "" for the file as a whole)."""

    code = "config_error"

    @property
    def key_path(self) -> str:
        """The key path in config.toml (the `field` of a config value)."""
        return self.field
