"""Callback crypto (REFERENCE §1.4–1.5, doc 90968/91144): signature, AES-256-CBC, 32-byte PKCS#7.

Decryption is strict on purpose: wechatpy's unpadder trusts the last byte and its parser is not
hardened, so scrm verifies the signature in constant time, checks the padding bytes, the length
prefix and the receive id itself with ``cryptography``. Encryption (used by the sandbox driver,
which plays WeCom) goes through wechatpy's own ``WeChatCrypto`` so the two sides are independent
implementations that must agree.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from scrm.errors import BadSignature, MalformedCallback, WrongCorp

PAD_BLOCK = 32  # WeCom pads to 32 bytes, not AES's 16 (REFERENCE §1.5)
# A passive text reply's Content: "最长不超过2048个字节，超过将截断" (doc 90241; 96469 for 代开发).
REPLY_CONTENT_MAX_BYTES = 2048


def truncate_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, at a character boundary (never half a
    character, which WeCom's own byte cut would leave)."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore")


def _cdata(text: str) -> str:
    # "]]>" cannot appear inside CDATA: split it across two sections.
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """msg_signature = sha1 of the four values sorted and concatenated (REFERENCE §1.4)."""
    joined = "".join(sorted([token, timestamp, nonce, encrypt]))
    return hashlib.sha1(joined.encode("utf-8")).hexdigest()  # noqa: S324 - WeCom's protocol


@dataclass(frozen=True)
class CallbackCrypto:
    token: str
    encoding_aes_key: str
    corp_id: str

    @property
    def _key(self) -> bytes:
        return base64.b64decode(self.encoding_aes_key + "=")

    def verify_signature(self, msg_signature: str, timestamp: str, nonce: str, encrypt: str) -> None:
        expected = signature(self.token, timestamp, nonce, encrypt)
        if not hmac.compare_digest(expected, (msg_signature or "").lower()):
            raise BadSignature("msg_signature does not match; check WECOM_TOKEN")

    def decrypt(self, encrypt: str) -> str:
        """Base64 → AES-CBC → strip 32-byte PKCS#7 → random(16)|len(4)|msg|receiveid."""
        try:
            raw = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedCallback("Encrypt is not valid base64") from None
        if not raw or len(raw) % 16:
            raise MalformedCallback("ciphertext length is not a whole number of AES blocks")
        key = self._key
        decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
        plain = decryptor.update(raw) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= PAD_BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise MalformedCallback("bad PKCS#7 padding; the ciphertext was altered or the AES key is wrong")
        content = plain[16:-pad]
        if len(content) < 4:
            raise MalformedCallback("decrypted message too short")
        (length,) = struct.unpack(">I", content[:4])
        if length > len(content) - 4:
            raise MalformedCallback("decrypted length prefix exceeds the message")
        msg, receive_id = content[4 : 4 + length], content[4 + length :]
        if not hmac.compare_digest(receive_id, self.corp_id.encode("utf-8")):
            raise WrongCorp("receive id is not our corp id; check WECOM_CORP_ID")
        try:
            return msg.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedCallback("decrypted message is not UTF-8") from None

    def verify_url(self, msg_signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        self.verify_signature(msg_signature, timestamp, nonce, echostr)
        return self.decrypt(echostr)

    def encrypt_text_reply(
        self, to_user: str, content: str, *, timestamp: int | None = None, nonce: str | None = None
    ) -> str:
        """The passive reply to a member's message (REFERENCE §1.6, doc 90241): a text message
        to ``to_user`` from our corp, encrypted and signed with wechatpy's ``WeChatCrypto`` into
        the ``<Encrypt/><MsgSignature/><TimeStamp/><Nonce/>`` envelope WeCom expects."""
        from wechatpy.work.crypto import WeChatCrypto

        ts = timestamp if timestamp is not None else int(time.time())
        plain = (
            f"<xml><ToUserName>{_cdata(to_user)}</ToUserName>"
            f"<FromUserName>{_cdata(self.corp_id)}</FromUserName>"
            f"<CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content>{_cdata(truncate_utf8(content, REPLY_CONTENT_MAX_BYTES))}</Content></xml>"
        )
        crypto = WeChatCrypto(self.token, self.encoding_aes_key, self.corp_id)
        envelope: str = crypto.encrypt_message(plain, nonce or str(secrets.randbelow(10**10)), str(ts))
        return envelope

    # --- the WeCom side (sandbox driver, tests) -------------------------------------------

    def open_reply(self, body: bytes) -> str:
        """Verify and decrypt a passive reply envelope as WeCom would; its plaintext XML."""
        from scrm.wecom.parse import parse_xml

        fields = {child.tag: child.text for child in parse_xml(body)}
        encrypt = fields.get("Encrypt", "")
        if not encrypt:
            raise MalformedCallback("reply has no <Encrypt> element")
        self.verify_signature(
            fields.get("MsgSignature", ""), fields.get("TimeStamp", ""), fields.get("Nonce", ""), encrypt
        )
        return self.decrypt(encrypt)

    def encrypt_callback(
        self, plaintext: str, *, timestamp: int | None = None, nonce: str | None = None
    ) -> tuple[dict[str, str], bytes]:
        """Encrypt like WeCom does, with wechatpy's implementation: returns (query args, XML body)."""
        from wechatpy.work.crypto import PrpCrypto

        ts = str(timestamp if timestamp is not None else int(time.time()))
        nonce = nonce or str(secrets.randbelow(10**10))
        encrypt = PrpCrypto(self._key).encrypt(plaintext, self.corp_id).decode("ascii")
        body = (
            f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        ).encode()
        args = {"msg_signature": signature(self.token, ts, nonce, encrypt), "timestamp": ts, "nonce": nonce}
        return args, body

    def encrypt_echostr(self, echo: str, *, timestamp: int | None = None) -> dict[str, str]:
        from wechatpy.work.crypto import PrpCrypto

        ts = str(timestamp if timestamp is not None else int(time.time()))
        nonce = str(secrets.randbelow(10**10))
        echostr = PrpCrypto(self._key).encrypt(echo, self.corp_id).decode("ascii")
        return {
            "msg_signature": signature(self.token, ts, nonce, echostr),
            "timestamp": ts,
            "nonce": nonce,
            "echostr": echostr,
        }
