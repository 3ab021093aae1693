"""The public web form other sites post leads to (form or JSON): configurable fields, a honeypot, a
per-IP rate limit, clear validation messages and a thank-you page."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("lead_form", __name__, url_prefix="/forms")
