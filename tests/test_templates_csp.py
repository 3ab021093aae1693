"""The console's Content-Security-Policy allows scripts and styles from our own files only
(scrm/web/security.py: script-src 'self', style-src 'self'), so inline ones silently do nothing
in a browser. Templates keep them in scrm/web/static/."""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[1] / "scrm" / "web" / "templates"
INLINE = {
    "a <style> element": re.compile(r"<style[\s>]", re.I),
    "a style attribute": re.compile(r"\sstyle\s*=", re.I),
    "an inline event handler": re.compile(r"\son[a-z]+\s*=\s*[\"']", re.I),
    "an inline script": re.compile(r"<script(?![^>]*\ssrc=)[^>]*>", re.I),
}


def test_no_template_relies_on_inline_scripts_or_styles() -> None:
    found = []
    for path in sorted(TEMPLATES.glob("*.html")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for what, pattern in INLINE.items():
                if pattern.search(line):
                    found.append(f"{path.name}:{number}: {what}")
    assert found == []
