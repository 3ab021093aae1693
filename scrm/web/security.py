"""Browser hardening for the web app: response headers, the session cookie's ``Secure`` flag, and
the startup warning for a sandbox served beyond this machine.

- Every response but WeCom's callback gets ``X-Content-Type-Options: nosniff``.
- Console pages (``/console…`` and the bare ``/`` that redirects there) also get
  ``X-Frame-Options: DENY`` and a Content-Security-Policy: scripts, styles, forms and frames only
  from this origin, never framed by anyone. The console is later opened inside the WeCom client's
  sidebar (聊天工具栏); WeCom loads sidebar pages in a webview of their own, not in a frame of
  another page, so DENY / ``frame-ancestors 'none'`` does not get in its way. Channel QR codes are
  images on WeCom's CDN (or the sandbox's origin), so images may come from any https origin.
- The session cookie is ``Secure`` when scrm is served over HTTPS. ``SCRM_PUBLIC_URL`` is the
  declaration (config/ reads it; it is also what WeCom's OAuth redirect uses): when it starts with
  ``https://`` every session cookie is Secure. Independently, a request that reached us over TLS
  (``request.is_secure``) gets a Secure cookie; behind a TLS-terminating proxy that needs the WSGI
  server to trust the proxy's ``X-Forwarded-Proto`` (gunicorn does for proxies in
  ``--forwarded-allow-ips``, loopback by default). We never trust that header ourselves: anyone
  could send it. See ``scrm.web.auth.CookieSessions``.
- The sandbox's login picker needs no password, and its ``/sandbox/_admin`` endpoints (its world
  view ``/sandbox/_admin/world`` among them) read and change the fake corp: ``warn_if_exposed``
  says so loudly when ``scrm serve`` listens on more than loopback.
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from flask import Flask, Response, request

from config import Settings

log = logging.getLogger(__name__)

CALLBACK_PREFIX = "/wecom/"


def content_security_policy(settings: Settings) -> str:
    images = ["'self'", "data:", "https:"]
    if settings.use_sandbox:
        # The sandbox serves its QR images from wherever it runs (plain http on a laptop).
        base = urlsplit(settings.wecom_api_base)
        if base.scheme and base.netloc:
            images.append(f"{base.scheme}://{base.netloc}")
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join(dict.fromkeys(images))}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def is_https(settings: Settings) -> bool:
    return settings.public_url.lower().startswith("https://")


def install(app: Flask, settings: Settings) -> None:
    """Headers on every response, and the session cookie's Secure flag (see the module docstring)."""
    app.config["SESSION_COOKIE_SECURE"] = is_https(settings)
    csp = content_security_policy(settings)

    @app.after_request
    def _headers(response: Response) -> Response:
        path = request.path
        if path.startswith(CALLBACK_PREFIX):
            # WeCom's callback: an empty 200 that no browser renders; keep its hot path bare.
            return response
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if path == "/" or path.startswith("/console"):
            response.headers.setdefault("X-Frame-Options", "DENY")
            response.headers.setdefault("Content-Security-Policy", csp)
            response.headers.setdefault("Referrer-Policy", "same-origin")
        return response


def is_loopback(host: str) -> bool:
    """Whether ``host`` (what the server binds) is reachable only from this machine."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a hostname or "" (every interface): assume others can reach it


def warn_if_exposed(host: str, settings: Settings) -> str | None:
    """Log a loud warning when the sandbox is served on a non-loopback address; the warning, or
    None when there is nothing to warn about."""
    if not settings.use_sandbox or is_loopback(host):
        return None
    lines = [
        "!" * 78,
        f"!! SANDBOX EXPOSED: scrm is serving its WeCom sandbox on {host or 'every interface'}.",
        "!! Anyone who can reach this address can log in to the console as any staff member",
        "!! (the sandbox's login picker has no password) and drive the fake corp through",
        "!! /sandbox/_admin (and read it all at /sandbox/_admin/world).",
        "!! Fix: serve on loopback (scrm serve --host 127.0.0.1), or configure a real corp",
        "!! (WECOM_CORP_ID, WECOM_SECRET, ... with WECOM_API_BASE unset) to leave sandbox mode.",
        "!" * 78,
    ]
    message = "\n".join(lines)
    log.warning("\n%s", message)
    return message
