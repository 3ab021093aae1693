"""Console pages for customers and contacts, lead imports (upload, map columns, preview, commit,
progress) and assignment rules."""

from __future__ import annotations

from flask import Blueprint

from scrm.web import console

bp = Blueprint("customers_console", __name__, url_prefix="/console")
console.attach(bp)  # CSRF, the WeCom banner, base.html's globals
