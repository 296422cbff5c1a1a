"""Webhook URL safety: keep deliveries away from the service's own network.

A webhook makes the service send requests to a URL a tenant chose, so without a check a tenant
could reach the cloud metadata endpoint, the database or anything else on the private network
(SSRF). The host is resolved and every address it resolves to must be public; the check runs at
submit time (a clear 422) and again right before each delivery, which then connects to the
checked address itself, so a DNS answer that changes in between (rebinding) cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

__all__ = ["UnsafeWebhookUrl", "WebhookHostUnresolvable", "check_webhook_url"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_ALLOW_HINT = (
    "webhooks may only reach public addresses (an operator can allow private ones with "
    "SLIMFORGE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES=true)"
)


class UnsafeWebhookUrl(ValueError):
    """The URL is not http(s), or its host is (or resolves to) a non-public address."""


class WebhookHostUnresolvable(UnsafeWebhookUrl):
    """The host does not resolve (now): worth retrying later, unlike an unsafe address."""


def _kind(ip: IPAddress) -> str | None:
    """Why ``ip`` is refused, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip.is_unspecified or ip.is_multicast:  # 0.0.0.0 counts as private too: say what it is
        return "not a public unicast address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "not a public unicast address"
    return None


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookHostUnresolvable(
            f"the webhook host '{host}' does not resolve ({exc})"
        ) from None
    # Drop an IPv6 zone ("fe80::1%eth0"): it is link-local anyway and ip_address refuses it.
    return list(dict.fromkeys(ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos))


def check_webhook_url(url: str, *, allow_private: bool) -> list[IPAddress]:
    """Check ``url``; returns the addresses it may be delivered to (empty when private
    addresses are allowed: then nothing is pinned and the host is resolved as usual).

    Raises :class:`UnsafeWebhookUrl` with a message that says why.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeWebhookUrl(f"the webhook URL must be http:// or https:// with a host: '{url}'")
    if allow_private:
        return []
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeWebhookUrl(f"the webhook URL has an invalid port: '{url}'") from None
    addresses = _resolve(parts.hostname, port)
    for ip in addresses:
        reason = _kind(ip)
        if reason is not None:
            shown = parts.hostname if str(ip) == parts.hostname else f"{parts.hostname} ({ip})"
            raise UnsafeWebhookUrl(f"the webhook host {shown} is {reason}; {_ALLOW_HINT}")
    if not addresses:
        raise WebhookHostUnresolvable(f"the webhook host '{parts.hostname}' has no address")
    return addresses
