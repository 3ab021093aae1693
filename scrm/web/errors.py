"""ScrmError → HTTP, in one place: JSON for /api, a readable page for the console."""

from __future__ import annotations

from flask import Flask, Response, jsonify, render_template, request

from scrm.errors import ScrmError


def install(app: Flask) -> None:
    @app.errorhandler(ScrmError)
    def _scrm_error(exc: ScrmError) -> tuple[Response | str, int]:
        if request.path.startswith("/api/") or request.path == "/healthz":
            return jsonify({"error": {"code": exc.code, "message": exc.message}}), exc.http_status
        return render_template("error.html", error=exc), exc.http_status
