"""The sandbox's in-memory WeCom world: one corp, its staff, customers, friendships, tags, channel codes,
customer groups, one-shot codes, access tokens, the log of every write WeCom would have applied, and the
fault knobs that make the emulator misbehave on demand.
``SandboxState`` owns this data and nothing else: the HTTP emulator (``scrm.sandbox.server``) and the
driver that plays customers and reps (``scrm.sandbox.driver``) both read and mutate it under its single
re-entrant lock. When constructed with a file it loads the world from it and keeps the file current,
so a sandbox restarted with the same file keeps its corp: a mutation only marks the world dirty
(``save``), and one short-lived saver thread writes it (temp file, fsync, ``os.replace``) at most every
``SAVE_INTERVAL_S``; ``flush`` writes at once, and every state with a file is flushed at interpreter
exit. Rewriting the whole file on every change made a 1,000-add burst cost minutes. Time is read from
``scrm.timeutil.utcnow()`` so tests move it with ``frozen_clock`` instead of sleeping.
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import json
import logging
import os
import random
import secrets
import threading
import time
import weakref
from collections import Counter, deque
from pathlib import Path
from typing import Any

import config
from scrm.timeutil import utcnow

log = logging.getLogger(__name__)

# WeCom rules the state enforces or exposes (see REFERENCE §3 for the doc ids).
WELCOME_CODE_TTL_S = 20  # doc 92137: a welcome_code lives 20 seconds and is single-use
OAUTH_CODE_TTL_S = 300  # doc 91023: an OAuth code lives 5 minutes and is single-use
TRANSFER_DELAY_S = 24 * 3600  # doc 94081: an on-job transfer completes automatically after 24 hours
DEFAULT_TOKEN_TTL_S = 7200  # doc 91039

STAFF_ACTIVE = 1
STAFF_LEFT = 5

# transfer_result statuses, doc 94088: 1 done, 2 waiting, 3 refused, 4 taker at limit, 5 no record.
TRANSFER_DONE = 1
TRANSFER_WAITING = 2
TRANSFER_REFUSED = 3
TRANSFER_LIMIT = 4

# The state file lags the world by at most this long while the sandbox runs (a kill -9 loses at most
# this much); a clean stop flushes.
SAVE_INTERVAL_S = 0.5

# How long a "timeout" fault holds its answer: past scrm's default WECOM_TIMEOUT_S (5 s), so the
# client really gives up. A client with a longer timeout needs a larger ``timeout_hold_ms`` knob.
DEFAULT_TIMEOUT_HOLD_MS = 8000

# Fault codes the CLI and the faults endpoint accept: the transient errors and token failures scrm's
# client must survive, plus the permission and business errors it must report.
FAULT_ERRCODES: tuple[int | str, ...] = (
    -1,
    45009,
    42001,
    40014,
    40001,
    60011,
    48002,
    84061,
    60111,
    "timeout",
)

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_CALL_LOG_SIZE = 5000

# Everything that makes up the world and is written to the state file. Faults and the call log are
# runtime knobs and diagnostics: a restarted sandbox starts well-behaved.
_PERSISTED = (
    "corp_id",
    "secret",
    "agent_id",
    "token",
    "aes_key",
    "token_ttl_s",
    "webhook_url",
    "seq",
    "departments",
    "staff",
    "customers",
    "relations",
    "tag_groups",
    "tags",
    "contact_ways",
    "group_chats",
    "welcome_codes",
    "oauth_codes",
    "tokens",
    "welcome_messages",
    "app_messages",
    "msg_templates",
    "remarks",
    "mark_tags",
    "transfers",
    "ledger",
    "effects",
    "chat_archive",
)


# Every state with a file, flushed at interpreter exit; weak, so a dropped state is not kept alive.
_WITH_FILES: weakref.WeakSet[SandboxState] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for state in list(_WITH_FILES):
        try:
            state.flush()
        except Exception:  # noqa: BLE001 - one broken file must not stop the others being written
            log.exception("sandbox state: final write of %s failed", state.state_file)


def default_faults() -> dict[str, Any]:
    return {
        "error_rate": 0.0,
        "errcodes": [-1],
        "latency_ms": 0,
        "timeout_hold_ms": DEFAULT_TIMEOUT_HOLD_MS,
        "seed": None,
        # Each item: {"errcode": int | "timeout", "endpoint": str | None}; consumed first-match.
        "forced": [],
    }


def _fault_code(value: Any) -> int | str:
    if value == "timeout":
        return "timeout"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"errcode {value!r}: an integer errcode or 'timeout'")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"errcode {value!r}: an integer errcode or 'timeout'") from None


def _number(knobs: dict[str, Any], name: str, low: float, high: float | None = None) -> float:
    value = knobs[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, not {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"{low:g}..{high:g}" if high is not None else f">= {low:g}"
        raise ValueError(f"{name} must be {bounds}, not {value!r}")
    return float(value)


def check_fault_knobs(knobs: dict[str, Any]) -> dict[str, Any]:
    """The fault knobs, checked and normalised; ``ValueError`` names the first bad one."""
    knobs = dict(knobs)
    if "timeout_sleep_s" in knobs:  # the hold's former name, in seconds
        seconds = _number(knobs, "timeout_sleep_s", 0)
        knobs.pop("timeout_sleep_s")
        knobs.setdefault("timeout_hold_ms", seconds * 1000)
    unknown = sorted(set(knobs) - set(default_faults()))
    if unknown:
        raise ValueError(f"unknown fault knob(s) {', '.join(unknown)}; known: {', '.join(default_faults())}")
    clean: dict[str, Any] = {}
    if "error_rate" in knobs:
        clean["error_rate"] = _number(knobs, "error_rate", 0, 1)
    if "latency_ms" in knobs:
        clean["latency_ms"] = _number(knobs, "latency_ms", 0)
    if "timeout_hold_ms" in knobs:
        clean["timeout_hold_ms"] = _number(knobs, "timeout_hold_ms", 0)
    if "errcodes" in knobs:
        codes = knobs["errcodes"]
        if not isinstance(codes, list):
            raise ValueError("errcodes must be a list of errcodes or 'timeout'")
        clean["errcodes"] = [_fault_code(c) for c in codes] or [-1]
    if "seed" in knobs:
        seed = knobs["seed"]
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | str)):
            raise ValueError("seed must be an integer, a string or null")
        clean["seed"] = seed
    if "forced" in knobs:
        forced = knobs["forced"] or []
        if not isinstance(forced, list):
            raise ValueError("forced must be a list")
        items = []
        for item in forced:
            if isinstance(item, dict):
                endpoint = item.get("endpoint")
                if endpoint is not None and not isinstance(endpoint, str):
                    raise ValueError("forced[].endpoint must be a string or null")
                items.append({"errcode": _fault_code(item.get("errcode")), "endpoint": endpoint})
            else:
                items.append({"errcode": _fault_code(item), "endpoint": None})
        clean["forced"] = items
    return clean


def now_ts() -> float:
    return utcnow().timestamp()


def _opaque(seed: str, length: int) -> str:
    """A deterministic, WeCom-looking alphanumeric string derived from ``seed``."""
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    while len(digest) < length:
        digest += hashlib.sha256(digest).digest()
    return "".join(_ALNUM[b % len(_ALNUM)] for b in digest[:length])


def qr_path(config_id: str) -> str:
    """The way's QR image, relative to the sandbox's base URL."""
    return f"qr/{config_id}.png"


def contact_path(config_id: str) -> str:
    """The page the way's QR code encodes, relative to the sandbox's base URL."""
    return f"contact/{config_id}"


def _rel_key(external_userid: str, userid: str) -> str:
    return f"{external_userid}|{userid}"


class SandboxState:
    """The WeCom world. Read or mutate it only while holding ``lock`` (public methods do so)."""

    def __init__(self, state_file: Path | None = None, *, token_ttl_s: int = DEFAULT_TOKEN_TTL_S) -> None:
        self.lock = threading.RLock()
        self.state_file = state_file
        # Persistence bookkeeping, under its own small lock so marking dirty never waits for a write.
        # ``_generation`` numbers snapshots; a snapshot older than the last one written is dropped, so
        # the saver thread and ``flush`` may race without an old world overwriting a newer one.
        self._save_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._dirty = False
        self._saver: threading.Thread | None = None
        self._generation = 0
        self._written_generation = 0
        self._reset_world(token_ttl_s)
        self.faults: dict[str, Any] = default_faults()
        self.rng = random.Random()  # noqa: S311 - fault injection, not security
        self.calls: deque[tuple[str, int]] = deque(maxlen=_CALL_LOG_SIZE)
        self.call_counts: Counter[str] = Counter()
        self.errcode_counts: Counter[int] = Counter()
        if state_file is not None:
            if state_file.is_file():
                self.load()
            _WITH_FILES.add(self)

    def _reset_world(self, token_ttl_s: int = DEFAULT_TOKEN_TTL_S) -> None:
        self.corp_id: str = config.SANDBOX_CORP_ID
        self.secret: str = config.SANDBOX_SECRET
        self.agent_id: int = config.SANDBOX_AGENT_ID
        self.token: str = config.SANDBOX_TOKEN
        self.aes_key: str = config.SANDBOX_AES_KEY
        self.token_ttl_s: int = token_ttl_s
        self.webhook_url: str | None = None
        self.seq: dict[str, int] = {}
        self.departments: dict[str, dict[str, Any]] = {}  # str(id) → department
        self.staff: dict[str, dict[str, Any]] = {}  # userid → member
        self.customers: dict[str, dict[str, Any]] = {}  # external_userid → external_contact
        self.relations: dict[str, dict[str, Any]] = {}  # "ext|userid" → follow info
        self.tag_groups: dict[str, dict[str, Any]] = {}  # group_id → group (without tags)
        self.tags: dict[str, dict[str, Any]] = {}  # tag_id → tag (with group_id)
        self.contact_ways: dict[str, dict[str, Any]] = {}  # config_id → contact way
        self.group_chats: dict[str, dict[str, Any]] = {}  # chat_id → group chat
        self.welcome_codes: dict[str, dict[str, Any]] = {}
        self.oauth_codes: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, float] = {}  # access_token → expires_at (unix seconds)
        self.welcome_messages: list[dict[str, Any]] = []
        self.app_messages: list[dict[str, Any]] = []
        self.msg_templates: list[dict[str, Any]] = []
        self.remarks: list[dict[str, Any]] = []
        self.mark_tags: list[dict[str, Any]] = []
        self.transfers: list[dict[str, Any]] = []
        self.ledger: dict[str, dict[str, Any]] = {}  # idempotency key → {"endpoint", "response"}
        self.effects: list[dict[str, Any]] = []  # {"endpoint", "idempotency_key", "payload"}
        # 会话存档: decrypted archive messages as the Finance SDK returns them, each with its seq.
        self.chat_archive: list[dict[str, Any]] = []

    # --- persistence -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy({name: getattr(self, name) for name in _PERSISTED})

    def save(self) -> None:
        """Mark the world changed: the saver thread writes it within ``SAVE_INTERVAL_S``.

        Cheap enough to call after every mutation (it never serialises anything itself).
        """
        if self.state_file is None:
            return
        with self._save_lock:
            self._dirty = True
            if self._saver is None:
                self._saver = threading.Thread(target=self._save_soon, name="sandbox-saver", daemon=True)
                self._saver.start()

    def _save_soon(self) -> None:
        # Lives only while changes keep coming: one write per interval, then exits once idle, so an
        # idle sandbox (and every test's throwaway state) holds no thread.
        while True:
            time.sleep(SAVE_INTERVAL_S)
            with self._save_lock:
                if not self._dirty:
                    self._saver = None
                    return
            try:
                self._write()
            except Exception:  # noqa: BLE001 - a failed write must not kill the saver; retried next round
                log.exception("sandbox state: writing %s failed; retrying", self.state_file)
                with self._save_lock:
                    self._dirty = True

    def flush(self) -> None:
        """Write pending changes now (a clean stop, or a test about to reload the file)."""
        if self.state_file is None:
            return
        with self._save_lock:
            if not self._dirty:
                return
        self._write()

    def _write(self) -> None:
        """Snapshot under the world lock, then write atomically: a crash never leaves half a file."""
        assert self.state_file is not None
        with self.lock:
            with self._save_lock:
                self._dirty = False
            self._generation += 1
            generation = self._generation
            # json.dumps reads the live dicts; holding the lock makes it a consistent snapshot without
            # the deep copy to_json() makes.
            data = json.dumps(
                {name: getattr(self, name) for name in _PERSISTED}, ensure_ascii=False, sort_keys=True
            )
        with self._write_lock:
            if generation <= self._written_generation:
                return  # a newer snapshot is already on disk
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_name(self.state_file.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.state_file)
            self._written_generation = generation

    def load(self) -> None:
        if self.state_file is None:
            return
        data = json.loads(self.state_file.read_text(encoding="utf-8"))
        with self.lock:
            for name in _PERSISTED:
                if name in data:
                    setattr(self, name, data[name])

    def reset(self, *, seed_demo: bool = True) -> None:
        with self.lock:
            webhook_url = self.webhook_url  # where callbacks go is wiring, not world: keep it
            self._reset_world(self.token_ttl_s)
            self.webhook_url = webhook_url
            self.set_faults(default_faults(), replace=True)
            self.calls.clear()
            self.call_counts.clear()
            self.errcode_counts.clear()
            if seed_demo:
                self.seed_demo_world()
            self.save()

    # --- chat archive (会话存档) ---------------------------------------------------------------

    def archive_message(
        self,
        sender: str,
        tolist: list[str],
        content: str,
        *,
        roomid: str = "",
        msgtype: str = "text",
        action: str = "send",
        msgtime_ms: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Archive one message in the decrypted shape GetChatData yields (doc 91774: ``msgid``,
        ``action``, ``from``, ``tolist``, ``roomid`` empty for 1:1, ``msgtime`` in ms, and a
        body keyed by ``msgtype``, e.g. ``text: {content}``); returns it with its ``seq``."""
        with self.lock:
            seq = self.next_seq("chat_archive")
            msgtime = msgtime_ms if msgtime_ms is not None else int(now_ts() * 1000)
            message: dict[str, Any] = {
                "seq": seq,
                "msgid": f"{_opaque(f'{self.corp_id}:msg:{seq}', 20)}_{msgtime // 1000}",
                "action": action,
                "from": sender,
                "tolist": list(tolist),
                "roomid": roomid,
                "msgtime": msgtime,
                "msgtype": msgtype,
            }
            if extra is not None:
                message.update(extra)
            elif msgtype == "text":
                message["text"] = {"content": content}
            self.chat_archive.append(message)
            self.save()
            return copy.deepcopy(message)

    def archive_page(self, seq: int, limit: int) -> list[dict[str, Any]]:
        """The archived messages after ``seq``, at most ``limit`` (GetChatData(seq, limit))."""
        with self.lock:
            return copy.deepcopy([m for m in self.chat_archive if m["seq"] > seq][:limit])

    # --- ids ---------------------------------------------------------------------------------

    def next_seq(self, kind: str) -> int:
        with self.lock:
            self.seq[kind] = self.seq.get(kind, 0) + 1
            return self.seq[kind]

    def new_id(self, kind: str) -> str:
        """Opaque ids shaped like WeCom's, deterministic for a given corp and creation order."""
        n = self.next_seq(kind)
        body = _opaque(f"{self.corp_id}:{kind}:{n}", 26)
        if kind == "external_userid":
            return f"wm{body}AAAA"
        if kind == "tag":
            return f"et{body}AAAA"
        if kind == "tag_group":
            return f"et{body}AGRP"
        if kind == "chat_id":
            return f"wr{body}AAAA"
        if kind == "config_id":
            return hashlib.md5(f"{self.corp_id}:config:{n}".encode()).hexdigest()  # noqa: S324 - an id
        if kind == "msgid":
            return f"msg{body}AAAA"
        return f"{kind}{n}"

    # --- faults and call log -----------------------------------------------------------------

    def set_faults(self, knobs: dict[str, Any], *, replace: bool = False) -> dict[str, Any]:
        """Merge ``knobs`` into the fault settings (or start from the defaults with ``replace``).

        Raises ``ValueError`` naming the knob for an unknown knob or a value out of range, so a typo
        or ``error_rate: 5`` is refused instead of silently ignored or clamped.
        """
        clean = check_fault_knobs(knobs)
        with self.lock:
            base = default_faults() if replace else self.faults
            merged = {**base, **clean}
            merged["forced"] = [self._forced_item(item) for item in merged.get("forced") or []]
            self.faults = merged
            self.rng = random.Random(merged["seed"])  # noqa: S311
            return copy.deepcopy(self.faults)

    @staticmethod
    def _forced_item(item: Any) -> dict[str, Any]:
        if isinstance(item, dict):
            return {"errcode": item["errcode"], "endpoint": item.get("endpoint")}
        return {"errcode": item, "endpoint": None}

    def force(self, errcode: int | str, endpoint: str | None = None, times: int = 1) -> None:
        """Queue ``errcode`` (or ``"timeout"``) for the next ``times`` calls (of ``endpoint``)."""
        with self.lock:
            self.faults["forced"].extend({"errcode": errcode, "endpoint": endpoint} for _ in range(times))

    def draw_fault(self, endpoint: str) -> int | str | None:
        """The fault to inject into this call, if any: forced queue first, then the random rate."""
        with self.lock:
            forced = self.faults["forced"]
            for i, item in enumerate(forced):
                if item["endpoint"] in (None, endpoint):
                    del forced[i]
                    return item["errcode"]  # type: ignore[no-any-return]
            rate = float(self.faults["error_rate"] or 0.0)
            codes = self.faults["errcodes"] or [-1]
            if rate > 0 and self.rng.random() < rate:
                return self.rng.choice(codes)  # type: ignore[no-any-return]
            return None

    def record_call(self, endpoint: str, errcode: int) -> None:
        with self.lock:
            self.calls.append((endpoint, errcode))
            self.call_counts[endpoint] += 1
            self.errcode_counts[errcode] += 1

    # --- tokens and one-shot codes -----------------------------------------------------------

    def issue_token(self) -> tuple[str, int]:
        """doc 91039: repeat calls inside the validity window return the same token."""
        with self.lock:
            now = now_ts()
            live = [(exp, tok) for tok, exp in self.tokens.items() if exp > now]
            if live:
                exp, tok = max(live)
                return tok, int(exp - now)
            tok = secrets.token_urlsafe(48)
            self.tokens[tok] = now + self.token_ttl_s
            self.save()
            return tok, self.token_ttl_s

    def token_status(self, access_token: str | None) -> int:
        """0 valid, 41001 missing, 40014 unknown, 42001 expired (REFERENCE §4)."""
        if not access_token:
            return 41001
        with self.lock:
            exp = self.tokens.get(access_token)
            if exp is None:
                return 40014
            return 0 if exp > now_ts() else 42001

    def expire_token(self, access_token: str | None = None) -> None:
        """Expire one token (or all): the next gettoken issues a new one."""
        with self.lock:
            past = now_ts() - 1
            for tok in list(self.tokens):
                if access_token is None or tok == access_token:
                    self.tokens[tok] = min(self.tokens[tok], past)
            self.save()

    def issue_welcome_code(self, external_userid: str, userid: str) -> str:
        with self.lock:
            code = secrets.token_urlsafe(24)
            self.welcome_codes[code] = {
                "external_userid": external_userid,
                "userid": userid,
                "created_at": now_ts(),
                "used": False,
            }
            self.save()
            return code

    def issue_oauth_code(self, userid: str) -> str:
        with self.lock:
            code = secrets.token_urlsafe(24)
            self.oauth_codes[code] = {"userid": userid, "created_at": now_ts(), "used": False}
            self.save()
            return code

    # --- directory ---------------------------------------------------------------------------

    def add_department(self, dept_id: int, name: str, parentid: int = 0, order: int = 0) -> dict[str, Any]:
        with self.lock:
            dept = {
                "id": dept_id,
                "name": name,
                "name_en": "",
                "department_leader": [],
                "parentid": parentid,
                "order": order,
            }
            self.departments[str(dept_id)] = dept
            self.save()
            return dept

    def upsert_staff(
        self,
        userid: str,
        name: str | None = None,
        *,
        department: list[int] | None = None,
        position: str | None = None,
        status: int | None = None,
        mobile: str | None = None,
    ) -> dict[str, Any]:
        with self.lock:
            member = self.staff.setdefault(
                userid,
                {
                    "userid": userid,
                    "name": name or userid,
                    "department": [1],
                    "position": "",
                    "status": STAFF_ACTIVE,
                    "mobile": "",
                    "gender": "0",
                    "email": "",
                    "avatar": "",
                },
            )
            for key, value in (
                ("name", name),
                ("department", department),
                ("position", position),
                ("status", status),
                ("mobile", mobile),
            ):
                if value is not None:
                    member[key] = value
            self.save()
            return member

    def is_active_staff(self, userid: str) -> bool:
        member = self.staff.get(userid)
        return member is not None and member["status"] == STAFF_ACTIVE

    # --- customers and friendships -----------------------------------------------------------

    def add_customer(
        self,
        name: str,
        *,
        unionid: str | None = None,
        gender: int = 0,
        type: int = 1,
        corp_name: str = "",
        avatar: str | None = None,
        external_userid: str | None = None,
    ) -> str:
        with self.lock:
            ext = external_userid or self.new_id("external_userid")
            self.customers[ext] = {
                "external_userid": ext,
                "name": name,
                "type": type,
                "gender": gender,
                "unionid": unionid,
                "avatar": avatar or f"https://wework.qpic.cn/wwhead/{_opaque(ext, 20)}/0",
                "corp_name": corp_name,
                "corp_full_name": corp_name,
                "position": "",
            }
            self.save()
            return ext

    def relation(self, external_userid: str, userid: str) -> dict[str, Any] | None:
        return self.relations.get(_rel_key(external_userid, userid))

    def add_relation(
        self,
        external_userid: str,
        userid: str,
        *,
        add_way: int = 1,
        state: str = "",
        oper_userid: str | None = None,
        remark: str = "",
        description: str = "",
        remark_corp_name: str = "",
        remark_mobiles: list[str] | None = None,
        tag_ids: list[str] | None = None,
        is_half: bool = False,
        createtime: int | None = None,
    ) -> dict[str, Any]:
        with self.lock:
            if external_userid not in self.customers:
                raise KeyError(f"unknown external_userid {external_userid}")
            if userid not in self.staff:
                raise KeyError(f"unknown userid {userid}")
            rel = {
                "userid": userid,
                "external_userid": external_userid,
                "remark": remark,
                "description": description,
                "remark_corp_name": remark_corp_name,
                "remark_mobiles": list(remark_mobiles or []),
                "createtime": createtime if createtime is not None else int(now_ts()),
                "add_way": add_way,
                "state": state,
                "oper_userid": oper_userid or userid,
                "tag_ids": list(tag_ids or []),
                "is_half": is_half,
                "deleted_by_customer": False,
            }
            self.relations[_rel_key(external_userid, userid)] = rel
            self.save()
            return rel

    def remove_relation(self, external_userid: str, userid: str) -> dict[str, Any] | None:
        with self.lock:
            rel = self.relations.pop(_rel_key(external_userid, userid), None)
            self.save()
            return rel

    def relations_of_user(self, userid: str) -> list[dict[str, Any]]:
        with self.lock:
            rels = [r for r in self.relations.values() if r["userid"] == userid]
            return sorted(rels, key=lambda r: (r["createtime"], r["external_userid"]))

    def relations_of_customer(self, external_userid: str) -> list[dict[str, Any]]:
        with self.lock:
            # By key over the (few) staff rather than a scan of every relation: externalcontact/get
            # is the sandbox's hottest call and the relation table grows with every add.
            keys = (_rel_key(external_userid, userid) for userid in self.staff)
            rels = [rel for key in keys if (rel := self.relations.get(key)) is not None]
            return sorted(rels, key=lambda r: (r["createtime"], r["userid"]))

    # --- corp tags ---------------------------------------------------------------------------

    def add_tag_group(self, name: str, order: int = 0, group_id: str | None = None) -> dict[str, Any]:
        with self.lock:
            gid = group_id or self.new_id("tag_group")
            group = {
                "group_id": gid,
                "group_name": name,
                "create_time": int(now_ts()),
                "order": order,
                "deleted": False,
            }
            self.tag_groups[gid] = group
            self.save()
            return group

    def group_by_name(self, name: str) -> dict[str, Any] | None:
        for group in self.tag_groups.values():
            if group["group_name"] == name and not group["deleted"]:
                return group
        return None

    def add_tag(self, group_id: str, name: str, order: int = 0) -> dict[str, Any]:
        with self.lock:
            if group_id not in self.tag_groups:
                raise KeyError(f"unknown tag group {group_id}")
            tag_id = self.new_id("tag")
            tag = {
                "id": tag_id,
                "name": name,
                "group_id": group_id,
                "create_time": int(now_ts()),
                "order": order,
                "deleted": False,
            }
            self.tags[tag_id] = tag
            self.save()
            return tag

    def live_tags(self, group_id: str) -> list[dict[str, Any]]:
        return [t for t in self.tags.values() if t["group_id"] == group_id and not t["deleted"]]

    def rename_tag(self, tag_or_group_id: str, name: str | None = None, order: int | None = None) -> str:
        """Rename/reorder a tag or a group; returns "tag" or "tag_group". KeyError when unknown."""
        with self.lock:
            target = self.tags.get(tag_or_group_id)
            kind = "tag"
            if target is None or target["deleted"]:
                target, kind = self.tag_groups.get(tag_or_group_id), "tag_group"
            if target is None or target["deleted"]:
                raise KeyError(tag_or_group_id)
            if name is not None:
                target["group_name" if kind == "tag_group" else "name"] = name
            if order is not None:
                target["order"] = order
            self.save()
            return kind

    def delete_tags(self, tag_ids: list[str], group_ids: list[str]) -> None:
        """Deleting a group deletes its tags; deleting a group's last tag deletes the group (doc 92117)."""
        with self.lock:
            doomed = set(tag_ids)
            for gid in group_ids:
                if gid in self.tag_groups:
                    self.tag_groups[gid]["deleted"] = True
                    doomed.update(t["id"] for t in self.live_tags(gid))
            touched_groups = set()
            for tid in doomed:
                if tid in self.tags:
                    self.tags[tid]["deleted"] = True
                    touched_groups.add(self.tags[tid]["group_id"])
            for gid in touched_groups:
                if not self.live_tags(gid):
                    self.tag_groups[gid]["deleted"] = True
            for rel in self.relations.values():
                rel["tag_ids"] = [t for t in rel["tag_ids"] if t not in doomed]
            self.save()

    def tag_view(self, tag_id: str) -> dict[str, Any]:
        tag = self.tags[tag_id]
        group = self.tag_groups[tag["group_id"]]
        return {"group_name": group["group_name"], "tag_name": tag["name"], "tag_id": tag_id, "type": 1}

    # --- contact ways ------------------------------------------------------------------------

    def add_contact_way(
        self,
        users: list[str],
        *,
        state: str = "",
        type: int = 1,
        scene: int = 2,
        remark: str = "",
        skip_verify: bool = True,
        config_id: str | None = None,
        style: int = 1,
    ) -> dict[str, Any]:
        with self.lock:
            cid = config_id or self.new_id("config_id")
            way = {
                "config_id": cid,
                "type": type,
                "scene": scene,
                "style": style,
                "remark": remark,
                "skip_verify": skip_verify,
                "state": state,
                "user": list(users),
                "party": [],
                "is_temp": False,
                # Relative to the sandbox's base URL, which the API answer completes (the state does not
                # know where it is served).
                "qr_code": qr_path(cid) if scene == 2 else "",
            }
            self.contact_ways[cid] = way
            self.save()
            return way

    def find_contact_way(self, state_or_config_id: str) -> dict[str, Any] | None:
        with self.lock:
            if state_or_config_id in self.contact_ways:
                return self.contact_ways[state_or_config_id]
            for way in self.contact_ways.values():
                if way["state"] == state_or_config_id:
                    return way
            return None

    # --- customer groups ---------------------------------------------------------------------

    def _bump_member_version(self, chat: dict[str, Any]) -> None:
        n = self.next_seq("member_version")
        chat["member_version"] = hashlib.md5(f"{chat['chat_id']}:{n}".encode()).hexdigest()  # noqa: S324

    def create_group(self, owner: str, name: str, members: list[str] | None = None) -> dict[str, Any]:
        with self.lock:
            if owner not in self.staff:
                raise KeyError(f"unknown owner {owner}")
            chat_id = self.new_id("chat_id")
            now = int(now_ts())
            chat: dict[str, Any] = {
                "chat_id": chat_id,
                "name": name,
                "owner": owner,
                "create_time": now,
                "notice": "",
                "member_list": [],
                "admin_list": [],
                "member_version": "",
                "status": 0,
                "dismissed": False,
            }
            for member in [owner, *[m for m in (members or []) if m != owner]]:
                chat["member_list"].append(self._member_entry(member, join_scene=1, invitor=owner, now=now))
            self._bump_member_version(chat)
            self.group_chats[chat_id] = chat
            self.save()
            return chat

    def _member_entry(self, member: str, *, join_scene: int, invitor: str | None, now: int) -> dict[str, Any]:
        is_external = member in self.customers
        entry: dict[str, Any] = {
            "userid": member,
            "type": 2 if is_external else 1,
            "join_time": now,
            "join_scene": join_scene,
            "group_nickname": "",
            "name": self.customers[member]["name"]
            if is_external
            else self.staff.get(member, {}).get("name", ""),
        }
        if invitor:
            entry["invitor"] = {"userid": invitor}
        if is_external and self.customers[member].get("unionid"):
            entry["unionid"] = self.customers[member]["unionid"]
        return entry

    def group_add_member(self, chat_id: str, member: str, *, join_scene: int, invitor: str | None) -> str:
        """Adds a member; returns the previous member_version. join_scene uses groupchat/get's scale."""
        with self.lock:
            chat = self.group_chats[chat_id]
            last = chat["member_version"]
            if all(m["userid"] != member for m in chat["member_list"]):
                chat["member_list"].append(
                    self._member_entry(member, join_scene=join_scene, invitor=invitor, now=int(now_ts()))
                )
            self._bump_member_version(chat)
            self.save()
            return last  # type: ignore[no-any-return]

    def group_remove_member(self, chat_id: str, member: str) -> str:
        with self.lock:
            chat = self.group_chats[chat_id]
            last = chat["member_version"]
            chat["member_list"] = [m for m in chat["member_list"] if m["userid"] != member]
            self._bump_member_version(chat)
            self.save()
            return last  # type: ignore[no-any-return]

    # --- transfers ---------------------------------------------------------------------------

    def settle_transfers(self) -> list[dict[str, Any]]:
        """Complete waiting transfers whose 24 h have passed (doc 94081); returns the newly completed.

        The customer moves to the taker: the handover's relation goes away (WeCom then reports
        del_external_contact with Source=DELETE_BY_TRANSFER) and the taker gets it, keeping the
        remark and tags, with add_way 202 (assigned by admin).
        """
        with self.lock:
            now = now_ts()
            done = []
            for tr in self.transfers:
                if tr["status"] != TRANSFER_WAITING or now < tr["takeover_time"]:
                    continue
                tr["status"] = TRANSFER_DONE
                old = self.remove_relation(tr["external_userid"], tr["handover_userid"])
                if self.relation(tr["external_userid"], tr["takeover_userid"]) is None:
                    self.add_relation(
                        tr["external_userid"],
                        tr["takeover_userid"],
                        add_way=202,
                        oper_userid=tr["takeover_userid"],
                        remark=(old or {}).get("remark", ""),
                        description=(old or {}).get("description", ""),
                        remark_mobiles=(old or {}).get("remark_mobiles", []),
                        tag_ids=(old or {}).get("tag_ids", []),
                        createtime=int(tr["takeover_time"]),
                    )
                done.append(tr)
            if done:
                self.save()
            return done

    # --- summary -----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {
                "corp_id": self.corp_id,
                "agent_id": self.agent_id,
                "webhook_url": self.webhook_url,
                "staff": len(self.staff),
                "customers": len(self.customers),
                "relations": len(self.relations),
                "tag_groups": sum(1 for g in self.tag_groups.values() if not g["deleted"]),
                "tags": sum(1 for t in self.tags.values() if not t["deleted"]),
                "contact_ways": len(self.contact_ways),
                "group_chats": sum(1 for c in self.group_chats.values() if not c["dismissed"]),
                "welcome_messages": len(self.welcome_messages),
                "app_messages": len(self.app_messages),
                "msg_templates": len(self.msg_templates),
                "remarks": len(self.remarks),
                "mark_tags": len(self.mark_tags),
                "transfers": len(self.transfers),
                "effects": len(self.effects),
                "calls": sum(self.call_counts.values()),
                "call_counts": dict(self.call_counts),
                "errcode_counts": {str(k): v for k, v in self.errcode_counts.items()},
                "faults": copy.deepcopy(self.faults),
            }

    # --- demo corp ---------------------------------------------------------------------------

    def seed_demo_world(self) -> None:
        """A deterministic demo corp: same ids on every machine, so docs and tests can name them."""
        with self.lock:
            self.add_department(1, "示例科技", 0, 100000000)
            self.add_department(2, "销售部", 1, 99999000)
            self.add_department(3, "市场部", 1, 99998000)
            self.upsert_staff("zhangsan", "张三", department=[2], position="销售代表")
            self.upsert_staff("lisi", "李四", department=[2], position="销售代表")
            self.upsert_staff("wangwu", "王五", department=[2], position="销售经理")
            self.upsert_staff("admin", "管理员", department=[1], position="管理员")
            level = self.add_tag_group("客户等级", order=2)
            for i, name in enumerate(("A类", "B类", "C类")):
                self.add_tag(level["group_id"], name, order=3 - i)
            source = self.add_tag_group("来源", order=1)
            for i, name in enumerate(("展会", "官网")):
                self.add_tag(source["group_id"], name, order=2 - i)
            tag_a = self.live_tags(level["group_id"])[0]["id"]
            tag_expo = self.live_tags(source["group_id"])[0]["id"]
            base = 1_700_000_000  # fixed add times keep the seeded world identical everywhere
            people = [
                ("陈晨", "oAmdemoUnionId0001", 1, "zhangsan", [tag_a, tag_expo], ["13800000001"]),
                ("刘洋", None, 2, "zhangsan", [], []),
                ("赵敏", "oAmdemoUnionId0003", 2, "lisi", [tag_a], ["13800000003"]),
                ("孙磊", None, 1, "lisi", [], []),
                ("周婷", None, 2, "wangwu", [tag_expo], []),
            ]
            for i, (name, unionid, gender, owner, tag_ids, mobiles) in enumerate(people):
                ext = self.add_customer(name, unionid=unionid, gender=gender)
                self.add_relation(
                    ext,
                    owner,
                    add_way=1,
                    state="",
                    oper_userid=ext,
                    tag_ids=tag_ids,
                    remark_mobiles=mobiles,
                    createtime=base + i * 3600,
                )
            self.add_contact_way(["zhangsan"], state="demo_expo", remark="展会扫码")
            self.add_contact_way(["zhangsan", "lisi"], type=2, state="demo_site", remark="官网")
            self.save()
