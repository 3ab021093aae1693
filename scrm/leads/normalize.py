"""Normalised keys for matching people and companies: E.164 phones (phonenumbers, CN default),
lowercased emails, company names without legal form, city or punctuation, names without spaces.
What dedupe compares (scrm.leads.dedupe) and what linking a new friend compares
(scrm.people.service) come from here, so a lead typed ``(+86) 138-0013-8000`` and a friend whose
remark says ``13800138000`` agree."""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

DEFAULT_REGION = "CN"


def fold_width(text: str) -> str:
    """Full-width digits, letters and punctuation as their ASCII forms (NFKC), trimmed."""
    return unicodedata.normalize("NFKC", text or "").strip()


def phone_e164(raw: str | None, region: str = DEFAULT_REGION) -> str | None:
    """E.164 for a valid number, None when it is not one. Full-width digits, ``0086``, ``(+86)``,
    spaces and dashes are all accepted: '０086 138-0013-8000' and '+86 13800138000' agree."""
    text = fold_width(raw or "")
    if not text:
        return None
    if text.startswith("00"):
        text = "+" + text[2:]  # the international call prefix, as dialled from China
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(e164: str | None) -> str:
    """For logs and lists: +86138****8000 (never a full number at INFO or on a page)."""
    if not e164:
        return ""
    return e164[:6] + "****" + e164[-4:] if len(e164) > 10 else "****"


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def email_key(raw: str | None) -> str | None:
    """The address lowercased, or None when it is empty or not an address."""
    text = fold_width(raw or "").lower()
    return text if text and _EMAIL.match(text) else None


_LATIN_NAME = re.compile(r"^[a-z][a-z .'-]*$")


def name_key(raw: str | None) -> str:
    """A person's name as matching sees it: width-folded, lowercased, without spaces or dots. A
    name in Latin letters has its words sorted first, since 'Zhang Wei' and 'Wei Zhang' are one
    person written in two orders; a Chinese name keeps its order (张 三 is 张三, not 三张)."""
    text = fold_width(raw or "").lower()
    if _LATIN_NAME.match(text):
        text = " ".join(sorted(re.split(r"[\s.·•_-]+", text)))
    return re.sub(r"[\s.·•_-]+", "", text)


# Legal forms and generic suffixes, longest first so 有限责任公司 goes before 有限公司 and 公司.
_COMPANY_SUFFIXES = sorted(
    [
        "股份有限公司",
        "有限责任公司",
        "有限公司",
        "集团有限公司",
        "集团股份有限公司",
        "集团公司",
        "集团",
        "总公司",
        "分公司",
        "公司",
        "co., ltd.",
        "co.,ltd.",
        "co. ltd.",
        "co ltd",
        "co.",
        "ltd.",
        "ltd",
        "limited",
        " co",
        "inc.",
        "inc",
        "corp.",
        "corp",
        "corporation",
        "llc",
        "gmbh",
        "group",
    ],
    key=len,
    reverse=True,
)
# Cities a company name often starts with, or carries in brackets: 上海某某 / 某某（上海）.
_CITIES = (
    "北京",
    "上海",
    "天津",
    "重庆",
    "广州",
    "深圳",
    "杭州",
    "南京",
    "苏州",
    "成都",
    "武汉",
    "西安",
    "长沙",
    "郑州",
    "青岛",
    "厦门",
    "宁波",
    "无锡",
    "合肥",
    "福州",
    "济南",
    "大连",
    "沈阳",
    "东莞",
    "佛山",
    "昆明",
    "南昌",
    "香港",
    "中国",
)
# The same cities as they are written in Latin letters, at the front: 'Shanghai Acme Robotics'.
_LATIN_CITIES = re.compile(
    r"^(?:beijing|shanghai|tianjin|chongqing|guangzhou|shenzhen|hangzhou|nanjing|suzhou|chengdu"
    r"|wuhan|xi'?an|changsha|zhengzhou|qingdao|xiamen|ningbo|wuxi|hefei|fuzhou|jinan|dalian"
    r"|shenyang|dongguan|foshan|kunming|nanchang|hong kong|china)\s+"
)
_BRACKETED = re.compile(r"[(\[（【][^)\]）】]*[)\]）】]")
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)
_EDGES = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)
# What must remain after a leading city is taken off, or the city stays: 上海银行 and 北京银行 are
# two banks, not one 银行, while 上海奇点科技 is 奇点科技 (a trade name plus its trade is rarely
# shorter than three characters).
_MIN_AFTER_CITY = 3


def company_key(raw: str | None) -> str:
    """The company name without what varies between spellings of one company: width, case,
    a bracketed part (usually a city), a leading city or 省/市 prefix, the legal form, spaces and
    punctuation. '上海奇点科技有限公司' and '奇点科技（上海）有限公司' and '奇点科技' agree, and so do
    'Acme Robotics (Shanghai) Co., Ltd.' and 'ACME Robotics Inc'."""
    text = fold_width(raw or "").lower()
    text = _BRACKETED.sub(" ", text)
    changed = True
    while changed:
        changed = False
        text = _EDGES.sub("", text)
        for suffix in _COMPANY_SUFFIXES:
            if text.endswith(suffix):
                # the longest form that ends the name; a name that is nothing but one keeps it
                if len(text) > len(suffix):
                    text, changed = text[: -len(suffix)], True
                break
    text = _EDGES.sub("", text)
    latin_city = _LATIN_CITIES.match(text)
    if latin_city and len(_NOT_WORD.sub("", text[latin_city.end() :])) >= _MIN_AFTER_CITY:
        text = text[latin_city.end() :]
    text = _NOT_WORD.sub("", text)
    for city in _CITIES:
        for prefix in (city + "市", city + "省", city):
            if text.startswith(prefix) and len(text) >= len(prefix) + _MIN_AFTER_CITY:
                text = text[len(prefix) :]
                break
        else:
            continue
        break
    return text[:128]
