"""Console pages for leads: the list (filters, sorting and pages on the server), a lead with its
timeline and actions, the public pool, likely duplicates, exports (CSV, XLSX) and the admins'
audit log. Reps see their own leads and the pool, managers their departments', admins all (the
same rule as the API)."""

from __future__ import annotations

from flask import Blueprint

from scrm.web import console

bp = Blueprint("leads_console", __name__, url_prefix="/console")
console.attach(bp)  # CSRF, the WeCom banner, base.html's globals
