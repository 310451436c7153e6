"""`maildispatch dkim status`: each domain's selectors, which one signs now, and what ops must
keep published. Reads only the config (no key file is opened), so it is safe to run anywhere."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dispatcher.config import Config, DkimKeyConfig

# Mail signed with a retired selector is still verified after delivery (forwarding, mailing
# lists, late DMARC and complaint processing), so its record stays published for a while.
KEEP_RETIRED_DAYS = 7


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _roles(config: Config) -> dict[str, list[str]]:
    roles: dict[str, list[str]] = {}
    for a in config.accounts:
        for d in a.author_domains:
            if "author" not in roles.setdefault(d, []):
                roles[d].append("author")
    for p in config.pools:
        for pd in p.domains:
            if pd.sign and "platform" not in roles.setdefault(pd.domain, []):
                roles[pd.domain].append("platform")
    return roles


def _selector_states(keys: list[DkimKeyConfig], now: float) -> list[dict[str, Any]]:
    """State of each key of one domain: signing, scheduled, or retired (and since when)."""
    out: list[dict[str, Any]] = []
    for k in keys:
        same = [o for o in keys if o.key_type == k.key_type and o is not k]
        if k.active_from > now:
            state, retired_at = "scheduled", None
        else:
            newer = [o.active_from for o in same if k.active_from < o.active_from <= now]
            state, retired_at = ("retired", min(newer)) if newer else ("signing", None)
        entry: dict[str, Any] = {
            "selector": k.selector,
            "type": k.key_type,
            "active_from": _iso(k.active_from),
            "state": state,
            "dns_name": f"{k.selector}._domainkey.{k.domain}",
            "file": str(k.file),
        }
        if retired_at is not None:
            entry["retired_at"] = _iso(retired_at)
            entry["keep_published_until"] = _iso(retired_at + KEEP_RETIRED_DAYS * 86400)
        out.append(entry)
    return out


def status_report_dict(config: Config, now: float) -> dict[str, Any]:
    """The status as plain data (for `--json`)."""
    by_domain: dict[str, list[DkimKeyConfig]] = {}
    for k in config.dkim.keys:
        by_domain.setdefault(k.domain, []).append(k)
    roles = _roles(config)
    domains: list[dict[str, Any]] = []
    reminders: list[str] = []
    for domain in sorted(by_domain):
        selectors = _selector_states(by_domain[domain], now)
        signing = [s["selector"] for s in selectors if s["state"] == "signing"]
        if not any(s["state"] == "signing" and s["type"] == "rsa" for s in selectors):
            reminders.append(f"{domain}: no RSA selector is active, so its mail cannot be signed")
        for s in selectors:
            if s["state"] == "retired":
                reminders.append(
                    f"{domain}: selector {s['selector']} retired at {s['retired_at']}; keep the "
                    f"TXT record {s['dns_name']} published until at least "
                    f"{s['keep_published_until']}"
                )
            elif s["state"] == "scheduled":
                reminders.append(
                    f"{domain}: selector {s['selector']} starts signing at {s['active_from']}; "
                    f"its TXT record {s['dns_name']} must be published (and propagated) before"
                )
        domains.append(
            {
                "domain": domain,
                "roles": roles.get(domain, []),
                "signing": signing,
                "selectors": selectors,
            }
        )
    return {
        "now": _iso(now),
        "canonicalization": config.dkim.canonicalization,
        "domains": domains,
        "reminders": reminders,
    }


def status_report(config: Config, now: float) -> str:
    """The status as text for a terminal."""
    data = status_report_dict(config, now)
    lines = [f"DKIM status at {data['now']} (canonicalization {data['canonicalization']})"]
    for d in data["domains"]:
        roles = ", ".join(d["roles"]) or "unused"
        signing = ", ".join(d["signing"]) or "NOTHING"
        lines.append("")
        lines.append(f"{d['domain']}  [{roles}]  signing now: {signing}")
        for s in d["selectors"]:
            since = "always" if s["active_from"] == _iso(0) else s["active_from"]
            state = f"retired {s['retired_at']}" if "retired_at" in s else s["state"]
            lines.append(f"  {s['selector']:<16} {s['type']:<8} from {since:<20}  {state}")
    if data["reminders"]:
        lines.append("")
        lines.append("Reminders:")
        lines.extend(f"  - {r}" for r in data["reminders"])
    lines.append("")
    lines.append(
        f"A retired selector's TXT record must stay published for at least {KEEP_RETIRED_DAYS} "
        "days after it stops signing: receivers and forwarders verify mail after delivery."
    )
    return "\n".join(lines)
