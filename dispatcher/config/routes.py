"""`[routes]`: per-domain next-hop overrides (`"domain" = "HOST:PORT"` or a list of them)."""

from __future__ import annotations

from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table
from dispatcher.config.values import Route, check_domain, parse_route

SECTION = Section("routes", ("<domain>",), free_form=True)


def parse_routes(t: Table) -> dict[str, tuple[Route, ...]]:
    routes: dict[str, tuple[Route, ...]] = {}
    for dom_raw, val in t.data.items():
        key = t.key(f'"{dom_raw}"')
        dom = check_domain(dom_raw, key)
        vals = val if isinstance(val, list) else [val]
        if not vals:
            raise ConfigError(field=key, reason="expected HOST:PORT or a list of them")
        routes[dom] = tuple(parse_route(x, f"{key}[{i}]") for i, x in enumerate(vals))
        t.raw(dom_raw)
    t.done()
    return routes
