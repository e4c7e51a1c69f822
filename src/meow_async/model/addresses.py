"""Addresses as people write them: an IPv6 host in brackets, so ``HOST:PORT`` stays readable;
an http(s) URL checked once for every setting that takes one."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

__all__ = ["bracket", "host_port", "http_url_parts"]


def bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def host_port(host: str, port: int | str) -> str:
    return f"{bracket(host)}:{port}"


def http_url_parts(url: object) -> SplitResult | None:
    """``url`` split, if it is an http:// or https:// URL with a host, a port that can be and
    no white space; None if not, for each setting to word its own error."""
    if not isinstance(url, str) or any(c.isspace() for c in url):
        return None
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # a bad port, or a bracket not closed
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        return None
    return parts
