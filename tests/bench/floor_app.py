"""The benchmark's floor: a minimal Flask endpoint that only verifies and decrypts with wechatpy."""

from __future__ import annotations

from flask import Flask, Response, request
from wechatpy.work.crypto import WeChatCrypto

import config


def create_floor_app() -> Flask:
    crypto = WeChatCrypto(config.SANDBOX_TOKEN, config.SANDBOX_AES_KEY, config.SANDBOX_CORP_ID)
    app = Flask("floor")

    @app.post("/wecom/callback")
    def callback() -> Response:
        args = request.args
        crypto.decrypt_message(request.get_data(), args["msg_signature"], args["timestamp"], args["nonce"])
        return Response("", status=200)

    return app
