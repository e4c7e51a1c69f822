"""Addresses as people write them: an IPv6 host in brackets, so ``HOST:PORT`` stays readable."""

from __future__ import annotations

__all__ = ["bracket", "host_port"]


def bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def host_port(host: str, port: int | str) -> str:
    return f"{bracket(host)}:{port}"
