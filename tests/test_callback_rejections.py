"""Bad input at the callback: each case gets the right status, writes zero rows and never logs
the payload (REFERENCE §1; DESIGN §4)."""

from __future__ import annotations

import base64
import logging
import time

import pytest
import requests
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from scrm.schema import InboxEvent, OutboxCommand
from scrm.wecom.crypto import CallbackCrypto, signature
from tests.helpers import count

SECRET_MARKER = "SECRET-PAYLOAD-MARKER-13800138000"


def event_xml(corp_id: str, create_time: int | None = None, extra: str = "") -> str:
    return (
        f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
        f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType>"
        f"<UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[{SECRET_MARKER}]]></ExternalUserID>{extra}</xml>"
    )


def envelope(corp_id: str, encrypt: str) -> bytes:
    return f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>".encode()


def signed(crypto: CallbackCrypto, encrypt: str, timestamp: int | None = None) -> dict[str, str]:
    ts = str(timestamp or int(time.time()))
    return {"msg_signature": signature(crypto.token, ts, "42", encrypt), "timestamp": ts, "nonce": "42"}


def raw_encrypt(crypto: CallbackCrypto, plain: bytes) -> str:
    """AES-CBC over bytes we lay out ourselves, to forge bad padding or lengths."""
    key = base64.b64decode(crypto.encoding_aes_key + "=")
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(plain) + enc.finalize()).decode()


def case_wrong_signature(crypto, corp_id):
    query, body = crypto.encrypt_callback(event_xml(corp_id))
    query["msg_signature"] = "0" * 40
    return query, body, 403


def case_wrong_corp(crypto, corp_id):
    other = CallbackCrypto(crypto.token, crypto.encoding_aes_key, "wwOTHERCORP0000000")
    query, body = other.encrypt_callback(event_xml("wwOTHERCORP0000000"))
    return query, body, 403


def case_tampered_ciphertext(crypto, corp_id):
    query, body = crypto.encrypt_callback(event_xml(corp_id))
    text = body.decode()
    start = text.index("<Encrypt><![CDATA[") + len("<Encrypt><![CDATA[")
    flipped = "A" if text[start + 5] != "A" else "B"
    return query, (text[: start + 5] + flipped + text[start + 6 :]).encode(), 403


def case_tampered_but_resigned(crypto, corp_id):
    """Someone with the token but not the key: the signature passes, decryption must not."""
    query, body = crypto.encrypt_callback(event_xml(corp_id))
    text = body.decode()
    start = text.index("<Encrypt><![CDATA[") + len("<Encrypt><![CDATA[")
    end = text.index("]]></Encrypt>")
    raw = bytearray(base64.b64decode(text[start:end]))
    raw[-20] ^= 0xFF  # corrupt the last block: padding and receive id become garbage
    encrypt = base64.b64encode(bytes(raw)).decode()
    return signed(crypto, encrypt), envelope(corp_id, encrypt), 400


def case_bad_padding(crypto, corp_id):
    msg = event_xml(corp_id).encode()
    plain = b"0" * 16 + len(msg).to_bytes(4, "big") + msg + corp_id.encode()
    pad = 32 - len(plain) % 32
    plain += bytes([pad]) * (pad - 1) + bytes([0])  # last byte 0: not a valid PKCS#7 pad
    encrypt = raw_encrypt(crypto, plain)
    return signed(crypto, encrypt), envelope(corp_id, encrypt), 400


def case_xxe(crypto, corp_id):
    xml = '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>' + event_xml(
        corp_id
    ).replace("<UserID><![CDATA[zhangsan]]></UserID>", "<UserID>&xxe;</UserID>")
    query, body = crypto.encrypt_callback(xml)
    return query, body, 400


def case_billion_laughs(crypto, corp_id):
    entities = '<!ENTITY a "ha">' + "".join(
        f'<!ENTITY {chr(98 + i)} "&{chr(97 + i)};&{chr(97 + i)};&{chr(97 + i)};">' for i in range(8)
    )
    xml = f'<?xml version="1.0"?><!DOCTYPE xml [{entities}]>' + event_xml(corp_id).replace(
        "<UserID><![CDATA[zhangsan]]></UserID>", "<UserID>&i;</UserID>"
    )
    query, body = crypto.encrypt_callback(xml)
    return query, body, 400


def case_outer_xxe(crypto, corp_id):
    query, body = crypto.encrypt_callback(event_xml(corp_id))
    evil = b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + body
    return query, evil, 400


def case_ten_megabytes(crypto, corp_id):
    query, body = crypto.encrypt_callback(event_xml(corp_id))
    return query, body + b" " * (10 * 1024 * 1024), 413


def case_not_xml(crypto, corp_id):
    query, _ = crypto.encrypt_callback(event_xml(corp_id))
    return query, b'{"encrypt": "' + SECRET_MARKER.encode() + b'"}', 400


def case_missing_encrypt(crypto, corp_id):
    query, _ = crypto.encrypt_callback(event_xml(corp_id))
    return query, f"<xml><ToUserName>{corp_id}</ToUserName></xml>".encode(), 400


def case_missing_query(crypto, corp_id):
    _, body = crypto.encrypt_callback(event_xml(corp_id))
    return {}, body, 400


def case_missing_fields(crypto, corp_id):
    xml = f"<xml><ToUserName>{corp_id}</ToUserName><Content>{SECRET_MARKER}</Content></xml>"  # no MsgType
    query, body = crypto.encrypt_callback(xml)
    return query, body, 400


def case_missing_create_time(crypto, corp_id):
    xml = event_xml(corp_id).replace("<CreateTime>", "<Other>").replace("</CreateTime>", "</Other>")
    query, body = crypto.encrypt_callback(xml)
    return query, body, 400


def case_stale_timestamp(crypto, corp_id):
    old = int(time.time()) - 3600
    query, body = crypto.encrypt_callback(event_xml(corp_id, old), timestamp=old)
    return query, body, 403


def case_future_timestamp(crypto, corp_id):
    future = int(time.time()) + 3600
    query, body = crypto.encrypt_callback(event_xml(corp_id, future), timestamp=future)
    return query, body, 403


CASES = [
    case_wrong_signature,
    case_wrong_corp,
    case_tampered_ciphertext,
    case_tampered_but_resigned,
    case_bad_padding,
    case_xxe,
    case_billion_laughs,
    case_outer_xxe,
    case_ten_megabytes,
    case_not_xml,
    case_missing_encrypt,
    case_missing_query,
    case_missing_fields,
    case_missing_create_time,
    case_stale_timestamp,
    case_future_timestamp,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__.removeprefix("case_") for c in CASES])
def test_bad_callback_is_rejected_without_rows_or_payload_in_logs(scrm, case, caplog):
    crypto = scrm.app.extensions["scrm"].crypto
    query, body, expected = case(crypto, crypto.corp_id)
    with caplog.at_level(logging.DEBUG):
        response = requests.post(scrm.callback_url, params=query, data=body, timeout=30)
    assert response.status_code == expected, response.text
    scrm.app.extensions["scrm.pool"].wait_idle()
    assert count(scrm, InboxEvent) == 0
    assert count(scrm, OutboxCommand) == 0
    assert SECRET_MARKER not in caplog.text
    assert SECRET_MARKER not in response.text
    assert "zhangsan" not in caplog.text  # nothing of the decrypted payload


def test_valid_callback_after_rejections_is_accepted(scrm):
    """The control: the same construction, unaltered, is stored."""
    crypto = scrm.app.extensions["scrm"].crypto
    query, body = crypto.encrypt_callback(event_xml(crypto.corp_id))
    assert requests.post(scrm.callback_url, params=query, data=body, timeout=10).status_code == 200
    scrm.app.extensions["scrm.pool"].wait_idle()
    assert count(scrm, InboxEvent) == 1


def test_vector_b_from_the_reference(clean_db):
    """Official sample vector B (REFERENCE §1.8), through the real Flask app."""
    from scrm.app import create_app
    from tests.conftest import make_settings

    settings = make_settings(clean_db, SCRM_CALLBACK_MAX_AGE_S="0", SCRM_DISPATCH_THREADS="0")
    client = create_app(settings, mount_sandbox=False).test_client()
    echo = client.get(
        "/wecom/callback",
        query_string={
            "msg_signature": "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb",
            "timestamp": "1476416373",
            "nonce": "47744683",
            "echostr": "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA==",
        },
    )
    assert echo.status_code == 200 and echo.data == b"1288432023552776189"
    body = (
        "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName>\n<Encrypt><![CDATA[Kl7kjoSf6DMD1zh7rtrHj"
        "FaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2AEew+kkYcD+Fq72Kt00fT"
        "0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilE"
        "bjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux08"
        "2f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+]]></Encrypt>\n<AgentID><![CDATA[1000002]]></AgentI"
        "D>\n</xml>"
    )
    response = client.post(
        "/wecom/callback",
        query_string={
            "msg_signature": "0c3914025cb4b4d68103f6bfc8db550f79dcf48e",
            "timestamp": "1476422779",
            "nonce": "1597212914",
        },
        data=body,
    )
    # A member's text message gets the bot's passive reply (§1.6): "你好" is no command, so the help.
    assert response.status_code == 200
    reply = client.application.extensions["scrm"].crypto.open_reply(response.data)
    assert "<ToUserName><![CDATA[ChenJiaShun]]></ToUserName>" in reply and "帮助" in reply
    ctx = client.application.extensions["scrm"].ctx
    with ctx.session_factory() as session:
        from sqlalchemy import select

        row = session.scalars(select(InboxEvent)).one()
    assert (row.msg_type, row.event) == ("text", "")
    assert "<Content>你好</Content>" in row.payload
    ctx.engine.dispose()


@pytest.mark.parametrize(
    "document",
    [
        "<!DOCTYPE xml><xml><A>1</A></xml>",  # any DTD, even an empty one
        '<!DOCTYPE xml [<!ENTITY a "x">]><xml><A>&a;</A></xml>',
        '<!DOCTYPE xml [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><A>&e;</A></xml>',
        '<!DOCTYPE xml [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]><xml/>',
        "<xml><A>&undefined;</A></xml>",
        "<notxml><A>1</A></notxml>",
        "<xml><A>1</A>",
        "",
    ],
)
def test_the_hardened_parser_refuses_before_expanding(document):
    from scrm.errors import MalformedCallback
    from scrm.wecom.parse import parse_xml

    with pytest.raises(MalformedCallback):
        parse_xml(document.encode())


def test_the_parser_keeps_fields_and_item_lists_like_wecom_sends_them():
    """Top-level text (CDATA or not, trimmed), lists of items in order, an item's own text only."""
    from scrm.wecom.parse import outer_encrypt, parse_envelope

    envelope = parse_envelope(
        "<xml><ToUserName><![CDATA[ww1]]></ToUserName><CreateTime> 1700000000 </CreateTime>"
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_chat]]></Event>"
        "<ChangeType>update</ChangeType><ChatId><![CDATA[wr1]]></ChatId>"
        "<MemChangeList><Item><![CDATA[wm1]]></Item><Item>wm2</Item><Item>wm3<Deep>no</Deep>tail</Item>"
        "</MemChangeList><Note>a &amp; b</Note></xml>"
    )
    assert envelope.items == {"MemChangeList": ["wm1", "wm2", "wm3"]}
    assert (envelope.create_time, envelope.get("ChatId"), envelope.get("Note")) == (
        1700000000,
        "wr1",
        "a & b",
    )
    assert "MemChangeList" not in envelope.fields
    # The envelope's first <Encrypt> is the one verified against the signature.
    assert outer_encrypt(
        b"<xml><ToUserName>ww1</ToUserName><Encrypt>AAA</Encrypt><Encrypt>BBB</Encrypt></xml>"
    ) == (
        "ww1",
        "AAA",
    )
