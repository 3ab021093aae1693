"""The sandbox's 「联系我」 codes are real QR images: add_contact_way's qr_code is a PNG the sandbox
serves, encoding the way's contact page, which names the reps the code adds."""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Iterator

import pytest
import requests
import segno
from werkzeug.serving import make_server

import config
from scrm.sandbox import SandboxState, create_sandbox_app
from scrm.sandbox.qr import QR_BORDER, QR_SCALE, qr_png


@pytest.fixture
def base() -> Iterator[str]:
    state = SandboxState()
    state.seed_demo_world()
    server = make_server("127.0.0.1", 0, create_sandbox_app(state), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


def _token(base: str) -> str:
    resp = requests.get(
        base + "/cgi-bin/gettoken",
        params={"corpid": config.SANDBOX_CORP_ID, "corpsecret": config.SANDBOX_SECRET},
        timeout=5,
    )
    return str(resp.json()["access_token"])


def _png_pixels(png: bytes) -> tuple[int, int, list[list[int]]]:
    """Decode the grayscale, non-interlaced PNGs segno writes into rows of 0 (black) / 1 (white)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data)
        elif kind == b"IDAT":
            idat += data
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert colour == 0 and interlace == 0 and depth in (1, 8)
    raw = zlib.decompress(idat)
    stride = (width * depth + 7) // 8
    rows, prev, off = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[off], bytearray(raw[off + 1 : off + 1 + stride])
        off += 1 + stride
        for i in range(stride):  # undo the PNG row filters (1 byte per pixel group)
            left = line[i - 1] if i else 0
            up, ul = prev[i], prev[i - 1] if i else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - ul
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else ul
                line[i] = (line[i] + pred) & 0xFF
        prev = line
        if depth == 1:
            bits = [(line[x // 8] >> (7 - x % 8)) & 1 for x in range(width)]
        else:
            bits = [1 if line[x] > 127 else 0 for x in range(width)]
        rows.append(bits)
    return width, height, rows


def test_qr_png_encodes_exactly_its_text() -> None:
    text = "http://127.0.0.1:8000/sandbox/contact/0123abcd"
    width, height, rows = _png_pixels(qr_png(text))
    matrix = [list(r) for r in segno.make(text, error="m", micro=False).matrix]
    size = len(matrix)
    assert width == height == (size + 2 * QR_BORDER) * QR_SCALE
    # Sample the centre of every module: dark modules are black pixels, and the quiet zone is white.
    for y in range(size):
        for x in range(size):
            px = rows[(y + QR_BORDER) * QR_SCALE + QR_SCALE // 2][(x + QR_BORDER) * QR_SCALE + QR_SCALE // 2]
            assert px == (0 if matrix[y][x] else 1), (x, y)
    assert all(rows[1][x] == 1 for x in range(width))
    other = [list(r) for r in segno.make(text + "x", error="m", micro=False).matrix]
    assert other != matrix  # the comparison above can tell texts apart


def test_add_contact_way_hands_out_a_served_png_of_the_contact_page(base: str) -> None:
    token = _token(base)
    way = requests.post(
        base + "/cgi-bin/externalcontact/add_contact_way",
        params={"access_token": token},
        json={"type": 2, "scene": 2, "user": ["zhangsan", "lisi"], "state": "c_qr", "remark": "展台"},
        timeout=5,
    ).json()
    assert way["errcode"] == 0
    image = requests.get(way["qr_code"], timeout=5)
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/png"
    contact_url = f"{base}/contact/{way['config_id']}"
    assert image.content == qr_png(contact_url)
    width, height, _ = _png_pixels(image.content)
    assert width == height >= 200

    page = requests.get(contact_url, timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert "张三" in page.text and "李四" in page.text and "c_qr" in page.text

    assert requests.get(f"{base}/qr/nope.png", timeout=5).status_code == 404
    assert requests.get(f"{base}/contact/nope", timeout=5).status_code == 404


def test_a_mini_program_way_has_no_qr_image(base: str) -> None:
    token = _token(base)
    way = requests.post(
        base + "/cgi-bin/externalcontact/add_contact_way",
        params={"access_token": token},
        json={"type": 1, "scene": 1, "user": ["zhangsan"], "state": "mini"},
        timeout=5,
    ).json()
    assert way["errcode"] == 0 and "qr_code" not in way
    assert requests.get(f"{base}/qr/{way['config_id']}.png", timeout=5).status_code == 404
