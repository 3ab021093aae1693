"""A seeded generator of archived messages (会话存档, the decrypted format of doc 91774) with the
expected keyword hits computed from how it placed the keywords, not by the matcher.

Rules: each has a few Chinese keywords, exact or fuzzy. A customer's 1:1 message may carry one
rule's keyword inside a longer sentence, verbatim or (fuzzy rules, keywords of 3+ characters)
with one filler character inserted inside it; that is a planted hit. Near misses are planted
too and must not match: the keyword with two characters inserted, its characters scattered far
apart, a word sharing all but its last character, the keyword's characters out of order. Reps
also write keywords (never a hit), some messages are redelivered (same msgid), one is recalled
(a recall notice, which never counts), and some are group messages. Filler text is drawn from
characters that occur in no keyword, so nothing matches by accident.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Keywords and the characters filler text may use are disjoint.
KEYWORD_POOL = [
    "多少钱", "报价单", "优惠券", "怎么买", "退款", "发票", "试用版", "合同", "售后服务", "安装师傅",
    "价格优惠", "包邮吗", "分期付款", "保修期", "上门安装", "体验课", "会员卡", "代理商", "加盟费",
    "样品", "续费", "营业执照", "开户行", "转账记录", "物流单号", "退货地址", "尺码表", "定制款",
    "批发价", "现货吗", "预约时间", "演示视频", "说明书", "技术参数", "年费套餐", "团购价", "首付",
    "投诉", "赔偿金", "质检报告", "产地证明", "运费险", "质保卡", "以旧换新", "免息分期", "积分兑换",
    "直播间", "秒杀活动", "新品发布", "门店地址", "营业时间", "停车场", "充电桩", "续航里程", "排量",
    "月供方案", "首保", "年检", "上牌", "置换补贴",
]
_KEYWORD_CHARS = set("".join(KEYWORD_POOL))
FILLER = "".join(c for c in "你好我想了解一下这个东西请问一些情况谢谢今天明天后天早上晚上看到对的呢嗯哦啊" if c not in _KEYWORD_CHARS)
INSERTS = "的了呢啊嗯"
assert not _KEYWORD_CHARS & set(FILLER + INSERTS + "，")


@dataclass
class Archive:
    reps: list[str]
    friends: list[tuple[str, str]]  # (external_userid, rep userid)
    rules: list[tuple[int, list[str], bool]]  # (rule id, keywords, fuzzy)
    messages: list[dict[str, Any]]
    expected: set[tuple[tuple[str, str], int]] = field(default_factory=set)  # ((ext, rep), rule id)
    # messages that are not new on a second delivery
    redelivered: int = 0


def _filler(rng: random.Random, low: int = 3, high: int = 12) -> str:
    return "".join(rng.choice(FILLER) for _ in range(rng.randint(low, high)))


def _near_miss(rng: random.Random, keyword: str) -> str:
    """A text near ``keyword`` that no rule (exact or fuzzy) may match (see scrm.chat.keywords)."""
    kind = rng.randrange(4)
    if kind == 0 and len(keyword) >= 2:  # two characters inserted
        i = len(keyword) // 2 if len(keyword) > 2 else 1
        return keyword[:i] + rng.choice(INSERTS) + rng.choice(INSERTS) + keyword[i:]
    if kind == 1:  # scattered far apart
        return "，".join(c + _filler(rng, 4, 6) for c in keyword)
    if kind == 2:  # the last character replaced: another word
        return keyword[:-1] + rng.choice(INSERTS)
    return keyword[::-1] if len(keyword) > 1 and keyword[::-1] != keyword else _filler(rng)  # out of order


def generate(
    count: int, *, seed: int = 12, rules: int = 8, reps: int = 4, friends: int = 200, hit_rate: float = 0.03
) -> Archive:
    archive = plan(seed=seed, rules=rules, reps=reps, friends=friends)
    archive.messages = list(stream(archive, count, seed=seed, hit_rate=hit_rate))
    return archive


def plan(*, seed: int = 12, rules: int = 8, reps: int = 4, friends: int = 200) -> Archive:
    """Rules, reps and friends; no messages yet (``stream`` makes them)."""
    rng = random.Random(seed)  # noqa: S311 - test data
    pool: list[str] = []
    rule_list = []
    for rule_id in range(1, rules + 1):
        if len(pool) < 3:  # more rules than the pool: keywords repeat across rules (benchmarks only)
            pool = list(KEYWORD_POOL)
            rng.shuffle(pool)
        keywords = [pool.pop() for _ in range(rng.choice((1, 2, 3)))]
        rule_list.append((rule_id, keywords, rule_id % 2 == 1))
    rep_ids = [f"rep{i:02d}" for i in range(1, reps + 1)]
    friend_list = [(f"wmGen{i:06d}", rep_ids[i % reps]) for i in range(friends)]
    return Archive(rep_ids, friend_list, rule_list, [])


def stream(archive: Archive, count: int, *, seed: int = 12, hit_rate: float = 0.03) -> Iterator[dict[str, Any]]:
    """``count`` messages (a few more when the last round adds a recall or a redelivery), adding
    the planted hits to ``archive.expected`` and counting redeliveries as it goes."""
    rng = random.Random(seed + 1)  # noqa: S311 - test data
    friend_list, rule_list, rep_ids = archive.friends, archive.rules, archive.reps
    recent: list[dict[str, Any]] = []  # what a redelivery repeats
    base_ms = 1_765_000_000_000
    made = 0
    serial = 0
    while made < count:
        serial += 1
        ext, rep = friend_list[rng.randrange(len(friend_list))]
        msgtime = base_ms + serial * 1500
        msgid = f"gen{seed}_{serial}_external"
        roll = rng.random()
        rule_id, keywords, fuzzy = rule_list[rng.randrange(len(rule_list))]
        keyword = rng.choice(keywords)
        sender, to = ext, rep
        if roll < hit_rate:  # a planted hit, inside a longer sentence
            word = keyword
            if fuzzy and len(keyword) >= 3 and rng.random() < 0.5:
                i = rng.randrange(1, len(keyword))
                word = keyword[:i] + rng.choice(INSERTS) + keyword[i:]
            content = _filler(rng) + word + _filler(rng)
            archive.expected.add(((ext, rep), rule_id))
        elif roll < hit_rate * 2:  # a near miss
            content = _filler(rng) + _near_miss(rng, keyword) + _filler(rng)
        elif roll < hit_rate * 3:  # the rep says the keyword: no hit
            sender, to = rep, ext
            content = _filler(rng) + keyword + _filler(rng)
        else:
            if rng.random() < 0.5:
                sender, to = rep, ext
            content = _filler(rng, 5, 30)
        message: dict[str, Any] = {
            "msgid": msgid,
            "action": "send",
            "from": sender,
            "tolist": [to],
            "roomid": "",
            "msgtime": msgtime,
            "msgtype": "text",
            "text": {"content": content},
        }
        if roll > 0.97:  # a group message with a keyword: no hit either
            message["roomid"] = f"wrGen{rng.randrange(20):04d}"
            message["tolist"] = [rep, ext, rep_ids[0]]
            message["text"] = {"content": keyword + _filler(rng)}
        yield message
        made += 1
        recent.append(message)
        if len(recent) > 1000:
            del recent[:500]
        if serial == 50:
            # The customer recalls a message: the recall notice (no text) never counts.
            yield {
                "msgid": f"gen{seed}_{serial}_recall",
                "action": "recall",
                "from": ext,
                "tolist": [rep],
                "roomid": "",
                "msgtime": msgtime + 10,
                "msgtype": "revoke",
                "revoke": {"pre_msgid": msgid},
            }
            made += 1
        if rng.random() < 0.02:  # a redelivery of an earlier message (same msgid)
            yield dict(recent[rng.randrange(len(recent))])
            made += 1
            archive.redelivered += 1


def lines(archive: Archive) -> Iterator[str]:
    """The messages as JSON lines (what ``scrm chat import`` reads)."""
    for message in archive.messages:
        yield json.dumps(message, ensure_ascii=False) + "\n"
