"""QR images for the sandbox's 「联系我」 codes: the PNG behind a contact way's ``qr_code`` URL.

Real WeCom hands out a picture a phone can scan; the sandbox does the same so the console shows a
real code, encoding the sandbox's own contact page for the way (segno, pure Python).
"""

from __future__ import annotations

import io
from functools import lru_cache

import segno

# Module size in pixels and quiet zone in modules: about 300 px for a short URL, like WeCom's images.
QR_SCALE = 8
QR_BORDER = 4


@lru_cache(maxsize=256)
def qr_png(data: str) -> bytes:
    """A PNG of ``data`` as a QR code (error correction M). Cached: a console page shows the same few."""
    buf = io.BytesIO()
    segno.make(data, error="m", micro=False).save(buf, kind="png", scale=QR_SCALE, border=QR_BORDER)
    return buf.getvalue()
