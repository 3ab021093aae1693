"""POST/GET /wecom/callback (REFERENCE §1, doc 91116/90968).

GET answers WeCom's URL verification with the decrypted echostr. POST verifies the signature,
rejects stale timestamps and foreign corp ids, decrypts strictly, parses with a hardened parser,
then stores the event in the inbox — with the welcome its add calls for — in one ordinary
transaction, answers an empty 200 once that has committed, and leaves the work to the after-ack
hook. A rep's text message to the app is the exception: its bot command runs in that same
transaction and the answer is the encrypted passive reply (handlers.app_message, scrm.bot).
A rejected callback writes no row and logs only why — never the payload.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, request

import handlers
from handlers import app_message
from scrm.db import transaction
from scrm.errors import CallbackRejected, CallbackTooLarge, MalformedCallback, StaleCallback, WrongCorp
from scrm.inbox import service as inbox
from scrm.web import metrics
from scrm.web.runtime import runtime
from scrm.wecom.parse import outer_encrypt, parse_envelope

log = logging.getLogger(__name__)
bp = Blueprint("callback", __name__)


def _query() -> tuple[str, str, str]:
    args = request.args
    signature, timestamp, nonce = (
        args.get("msg_signature", ""),
        args.get("timestamp", ""),
        args.get("nonce", ""),
    )
    if not signature or not timestamp or not nonce:
        raise MalformedCallback("msg_signature, timestamp and nonce are required query parameters")
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise MalformedCallback("timestamp must be Unix seconds")
    return signature, timestamp, nonce


def _check_age(timestamp: str) -> None:
    max_age = runtime().ctx.settings.callback_max_age_s
    if max_age and abs(time.time() - int(timestamp)) > max_age:
        raise StaleCallback(
            f"timestamp is more than {max_age}s away from our clock (SCRM_CALLBACK_MAX_AGE_S)"
        )


@bp.get("/wecom/callback")
def verify_url() -> Response:
    try:
        signature, timestamp, nonce = _query()
        echostr = request.args.get("echostr", "")
        if not echostr:
            raise MalformedCallback("echostr is required for URL verification")
        plain = runtime().crypto.verify_url(signature, timestamp, nonce, echostr)
    except CallbackRejected as exc:
        return _reject(exc)
    # WeCom wants the bare plaintext: no quotes, no BOM, no newline (REFERENCE §1.2)
    return Response(plain, status=200, mimetype="text/plain")


@bp.post("/wecom/callback")
def receive() -> Response:
    rt = runtime()
    settings = rt.ctx.settings
    try:
        length = request.content_length
        if length is not None and length > settings.callback_max_body_bytes:
            raise CallbackTooLarge(f"body over {settings.callback_max_body_bytes} bytes")
        body = request.get_data(cache=False)
        if len(body) > settings.callback_max_body_bytes:
            raise CallbackTooLarge(f"body over {settings.callback_max_body_bytes} bytes")
        signature, timestamp, nonce = _query()
        to_user, encrypt = outer_encrypt(body)
        rt.crypto.verify_signature(signature, timestamp, nonce, encrypt)
        _check_age(timestamp)
        if to_user and to_user != settings.wecom_corp_id:
            raise WrongCorp("ToUserName is not our corp id")
        plaintext = rt.crypto.decrypt(encrypt)
        envelope = parse_envelope(plaintext)
        if envelope.to_user and envelope.to_user != settings.wecom_corp_id:
            raise WrongCorp("decrypted ToUserName is not our corp id")
    except CallbackRejected as exc:
        return _reject(exc)

    welcome_id: int | None = None
    with transaction(rt.ctx.session_factory) as session:
        inbox_id = inbox.store(session, envelope, plaintext)
        if inbox_id is not None:
            welcome_id = handlers.on_arrival(session, envelope, inbox_id)
        # A rep's message to the app is a bot command, answered in this same transaction: its
        # effect, its reply and the inbox row commit together, and a retry gets the same reply.
        reply = app_message.passive_reply(
            session,
            envelope,
            inbox_id,
            public_url=settings.public_url,
            max_attempts=settings.inbox_max_attempts,
        )
    if inbox_id is None:
        metrics.count_callback("duplicate")
        log.debug("duplicate delivery of %s/%s acknowledged", envelope.event, envelope.change_type)
    else:
        metrics.count_callback("stored")
        rt.after_ack(inbox_id, welcome_id)
    if reply is not None:
        # The passive reply: a text message back to the rep, encrypted and signed (§1.6, doc 90241).
        answer = rt.crypto.encrypt_text_reply(envelope.from_user, reply)
        return Response(answer, status=200, mimetype="text/xml")
    # Customer-contact events take no passive reply: an empty 200 is the acknowledgement (§1.6).
    return Response("", status=200)


def _reject(exc: CallbackRejected) -> Response:
    log.info("callback rejected from %s: %s", request.remote_addr, exc.code)
    metrics.count_callback("rejected", exc.code)
    return Response(exc.message, status=exc.http_status, mimetype="text/plain")
