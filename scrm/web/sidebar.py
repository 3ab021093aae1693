"""The chat sidebar (聊天工具栏) a rep opens beside a customer's chat in WeCom, phone-sized: who this
external contact is, their tags and timeline, and the rep's actions on them."""

from __future__ import annotations

from flask import Blueprint

from scrm.web import console

bp = Blueprint("sidebar", __name__, url_prefix="/sidebar")
console.attach(bp)  # CSRF, the WeCom banner, base.html's globals
