"""A seeded, labelled set of leads for measuring dedupe: people, each written down one to four
times the way web forms, spreadsheets and reps write them, plus people who only look alike.

Every record carries ``group``, the person it is; two records are true duplicates exactly when
their groups are equal. The same seed gives the same records, byte for byte.

Variants injected into a person's second, third and fourth records (and some first ones):

- Phones (mainland mobiles): ``13800138000``, ``138 0013 8000``, ``138-0013-8000``,
  ``+86 138 0013 8000``, ``+8613800138000``, ``+86-138-0013-8000``, ``0086 13800138000``,
  ``0086-138-0013-8000``, ``(+86) 138-0013-8000``, ``（+86）138 0013 8000`` (full-width
  brackets), ``86 13800138000``, full-width digits ``１３８００１３８０００`` and full-width digits
  with ideographic spaces.
- Emails: upper case, a capitalised local part, surrounding spaces, a full-width ``＠``.
- Companies: legal forms 有限公司 / 有限责任公司 / 股份有限公司 / 集团 / 集团有限公司 / none, and
  for English names Co., Ltd. / Co.,Ltd / Co Ltd / Ltd / Limited / Inc. / Inc; the city in
  front (上海奇点科技, 上海市奇点科技, ``Shanghai Acme Robotics``) or in brackets (奇点科技（上海）,
  奇点科技(上海), ``Acme Robotics (Shanghai)``); full-width punctuation (``Co．，Ltd．``); a space
  between trade name and trade (奇点 科技); upper or lower case.
- Names: spaces between characters (张 三), an ideographic space (张　三); Latin names in upper
  or lower case, full-width letters, the other word order (Wei Zhang / Zhang Wei), and a
  one-letter typo when the name has at least 12 letters.
- Missing fields: a duplicate may lack its phone, its email, its company or its name, but keeps
  at least one of phone, email, or name with company (a row sharing none of them with its
  person is not findable by any key, and is not generated). About 30% of people have no email.

Not injected, because the matcher does not claim them: homophones and one-character typos in
Chinese names (张伟/张玮 and 王建国/王建华 score alike, and the second pair are colleagues as
often as one person), misspelt companies (fuzzy blocking is by the normalised company), a
person's Latin name beside their Chinese one, a shared family phone.

Hard negatives (different groups that look alike):

- Same name, different person: about 15% of people take the name of someone at another
  company, with their own phone and email; common names (张伟, 王芳) also recur by chance.
- Same company, different people: every company has several people; about 10% of people are
  a colleague whose name is one character (or, for pinyin names, one letter) away from another's
  at the same company (王建国/王建华, Zhang Wei/Zhang Wen). Two different people never share a
  name within one company (a reviewer, not a matcher, tells those apart).
- Related companies: trade names recur across trades (奇点科技 and 奇点贸易 are two companies),
  and a city-and-generic name keeps its city (上海银行 is not 北京银行).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from scrm.leads.normalize import company_key, name_key, phone_e164

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
)
GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华建国玉兰萍红鹏飞宇浩然欣怡子涵梓轩思雨晨阳文博嘉俊海燕"
)
PINYIN_SURNAMES = ["Zhang", "Wang", "Li", "Liu", "Chen", "Yang", "Huang", "Zhao", "Zhou", "Wu", "Xu", "Sun"]
PINYIN_GIVEN = ["Wei", "Fang", "Min", "Jing", "Lei", "Qiang", "Jun", "Yang", "Tao", "Ming", "Chao", "Hao"]
# A pinyin given name's one-letter neighbour, for colleagues who are not one person.
PINYIN_NEAR = {"Wei": "Wen", "Fang": "Fan", "Min": "Ming", "Jing": "Jin", "Lei": "Lin", "Jun": "Jia"}
ENGLISH_FIRST = ["Michael", "Jennifer", "Christopher", "Elizabeth", "Katherine", "Jonathan", "Stephanie"]
ENGLISH_LAST = ["Richardson", "Montgomery", "Henderson", "Fitzgerald", "Williamson", "Blackwood"]

TRADE_NAMES = [
    "奇点", "星河", "华信", "远景", "蓝海", "云图", "智汇", "拓维", "恒通", "博远", "启明", "凌云", "天行",
    "鼎盛", "汇丰源", "新元", "瑞达", "卓越", "金桥", "银河", "百川", "东方红", "锦程", "众诚", "优品",
    "同创", "长风", "青松", "海纳", "睿思", "极光", "鸿运", "安信", "正和", "德润", "中科汇", "易联",
]  # fmt: skip
TRADES = ["科技", "网络科技", "信息技术", "贸易", "医药", "教育科技", "物流", "电子", "文化传媒", "咨询"]
EN_WORDS = ["Acme", "Nimbus", "Vertex", "Orion", "Summit", "Harbor", "Quantum", "Aurora", "Pioneer", "Cobalt"]
EN_TRADES = ["Robotics", "Software", "Trading", "Logistics", "Biotech", "Consulting", "Media", "Electronics"]
CITIES = ["上海", "北京", "深圳", "广州", "杭州", "成都", "南京", "武汉"]
CITY_LATIN = {"上海": "Shanghai", "北京": "Beijing", "深圳": "Shenzhen", "广州": "Guangzhou",
              "杭州": "Hangzhou", "成都": "Chengdu", "南京": "Nanjing", "武汉": "Wuhan"}  # fmt: skip
CN_FORMS = ["有限公司", "有限责任公司", "股份有限公司", "集团", "集团有限公司", ""]
EN_FORMS = [" Co., Ltd.", " Co.,Ltd", " Co Ltd", " Ltd", " Limited", " Inc.", " Inc", ""]
MOBILE_PREFIXES = ["138", "139", "137", "135", "186", "189", "150", "158", "177", "188", "131", "199"]
DOMAINS = ["example.com", "mail.example.cn", "corp.example.net", "qq.example.com"]

FULL_WIDTH = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)})


@dataclass(frozen=True)
class Company:
    trade: str  # 奇点 or Acme
    kind: str  # 科技 or Robotics
    city: str
    english: bool


@dataclass
class Person:
    group: int
    name: str
    latin: bool
    phone: str  # 11 digits
    email: str | None
    company: Company
    negative: str = ""  # "same-name" or "near-colleague" when made to look like another


@dataclass(frozen=True)
class Record:
    group: int
    name: str
    phone: str
    email: str
    company: str
    variants: tuple[str, ...] = field(default=())

    def as_input(self) -> dict[str, str]:
        return {"name": self.name, "phone": self.phone, "email": self.email, "company": self.company}


def _companies(rng: random.Random, count: int) -> list[Company]:
    found: dict[str, Company] = {}
    while len(found) < count:
        english = rng.random() < 0.15
        if english:
            company = Company(rng.choice(EN_WORDS), rng.choice(EN_TRADES), rng.choice(CITIES), True)
        else:
            company = Company(rng.choice(TRADE_NAMES), rng.choice(TRADES), rng.choice(CITIES), False)
        found.setdefault(company_key(_canonical_company(company)), company)
    return list(found.values())


def _canonical_company(company: Company) -> str:
    if company.english:
        return f"{company.trade} {company.kind} Co., Ltd."
    return f"{company.city}{company.trade}{company.kind}有限公司"


def _chinese_name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2))))


def _latin_name(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"{rng.choice(PINYIN_SURNAMES)} {rng.choice(PINYIN_GIVEN)}"
    return f"{rng.choice(ENGLISH_FIRST)} {rng.choice(ENGLISH_LAST)}"


def _near_name(rng: random.Random, name: str, latin: bool) -> str | None:
    """A colleague's name one character (or one letter) from ``name``, or None."""
    if latin:
        surname, _, given = name.partition(" ")
        near = PINYIN_NEAR.get(given)
        return f"{surname} {near}" if near else None
    if len(name) < 2:
        return None
    position = rng.randrange(1, len(name))
    other = rng.choice([c for c in GIVEN if c != name[position]])
    return name[:position] + other + name[position + 1 :]


def _people(rng: random.Random, count: int) -> list[Person]:
    # about five people a company, up to 400 companies (of the 450 the word lists can spell)
    companies = _companies(rng, min(400, max(8, count // 5)))
    phones: set[str] = set()
    names_at: dict[str, set[str]] = {}  # company key → name keys of its people
    people: list[Person] = []

    def phone() -> str:
        while True:
            number = rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"
            if number not in phones and phone_e164(number):
                phones.add(number)
                return number

    while len(people) < count:
        group = len(people) + 1
        company = rng.choice(companies)
        ckey = company_key(_canonical_company(company))
        latin = rng.random() < 0.12
        name = _latin_name(rng) if latin else _chinese_name(rng)
        negative = ""
        roll = rng.random()
        if people and roll < 0.15:
            # same name, different person: someone else's name, at another company
            other = rng.choice(people)
            if other.company != company:
                name, latin, negative = other.name, other.latin, "same-name"
        elif people and roll < 0.25:
            # a colleague with a near name: the same company as someone, one character apart
            other = rng.choice(people)
            near = _near_name(rng, other.name, other.latin)
            if near:
                company, name, latin, negative = other.company, near, other.latin, "near-colleague"
                ckey = company_key(_canonical_company(company))
        if name_key(name) in names_at.get(ckey, set()):
            continue  # two people of one name at one company: not generated (see above)
        names_at.setdefault(ckey, set()).add(name_key(name))
        email = None
        if rng.random() < 0.7:
            email = f"user{group:05d}.{rng.randrange(100)}@{rng.choice(DOMAINS)}"
        people.append(Person(group, name, latin, phone(), email, company, negative))
    return people


def _phone_variant(rng: random.Random, digits: str) -> tuple[str, str]:
    a, b, c = digits[:3], digits[3:7], digits[7:]
    forms = {
        "phone-plain": digits,
        "phone-spaces": f"{a} {b} {c}",
        "phone-dashes": f"{a}-{b}-{c}",
        "phone-+86-spaces": f"+86 {a} {b} {c}",
        "phone-+86": f"+86{digits}",
        "phone-+86-dashes": f"+86-{a}-{b}-{c}",
        "phone-0086": f"0086 {digits}",
        "phone-0086-dashes": f"0086-{a}-{b}-{c}",
        "phone-(+86)": f"(+86) {a}-{b}-{c}",
        "phone-fullwidth-(+86)": f"（+86）{a} {b} {c}",
        "phone-86": f"86 {digits}",
        "phone-fullwidth": digits.translate(FULL_WIDTH),
        "phone-fullwidth-spaces": f"{a}\u3000{b}\u3000{c}".translate(FULL_WIDTH),
    }
    kind = rng.choice(sorted(forms))
    return kind, forms[kind]


def _email_variant(rng: random.Random, email: str) -> tuple[str, str]:
    local, _, domain = email.partition("@")
    forms = {
        "email-plain": email,
        "email-upper": email.upper(),
        "email-capitalised": local.capitalize() + "@" + domain.capitalize(),
        "email-spaces": f"  {email} ",
        "email-fullwidth-at": f"{local}＠{domain}",
    }
    kind = rng.choice(sorted(forms))
    return kind, forms[kind]


def _company_variant(rng: random.Random, company: Company) -> tuple[str, str]:
    city = company.city
    if company.english:
        base = f"{company.trade} {company.kind}"
        form = rng.choice(EN_FORMS)
        place = rng.choice(["none", "front", "bracket"])
        text = {
            "none": base + form,
            "front": f"{CITY_LATIN[city]} {base}{form}",
            "bracket": f"{base} ({CITY_LATIN[city]}){form}",
        }[place]
        case = rng.choice(["as-is", "upper", "lower", "fullwidth-punct"])
        if case == "upper":
            text = text.upper()
        elif case == "lower":
            text = text.lower()
        elif case == "fullwidth-punct":
            text = text.replace(",", "，").replace(".", "．").replace("(", "（").replace(")", "）")
        return f"company-en-{place}-{form.strip() or 'bare'}-{case}", text
    trade = company.trade + rng.choice(["", " "]) + company.kind
    form = rng.choice(CN_FORMS)
    place = rng.choice(["none", "front", "front-市", "bracket-full", "bracket-half"])
    text = {
        "none": trade + form,
        "front": city + trade + form,
        "front-市": city + "市" + trade + form,
        "bracket-full": f"{trade}（{city}）{form}",
        "bracket-half": f"{trade}({city}){form}",
    }[place]
    spaced = "-spaced" if " " in trade else ""
    return f"company-cn-{place}-{form or 'bare'}{spaced}", text


def _name_variant(rng: random.Random, name: str, latin: bool) -> tuple[str, str]:
    if not latin:
        kind = rng.choice(["as-is", "spaces", "ideographic-space"])
        if kind == "spaces":
            return "name-spaces", " ".join(name)
        if kind == "ideographic-space":
            return "name-ideographic-space", name[0] + "\u3000" + name[1:]
        return "name-as-is", name
    kinds = ["as-is", "upper", "lower", "fullwidth", "swapped"]
    if len(name_key(name)) >= 12:
        kinds.append("typo")
    kind = rng.choice(kinds)
    first, _, last = name.partition(" ")
    if kind == "upper":
        return "name-latin-upper", name.upper()
    if kind == "lower":
        return "name-latin-lower", name.lower()
    if kind == "fullwidth":
        return "name-latin-fullwidth", name.translate(FULL_WIDTH)
    if kind == "swapped":
        return "name-latin-swapped", f"{last} {first}"
    if kind == "typo":
        position = rng.randrange(1, len(first) - 1)
        letter = rng.choice([c for c in "aeiourstnl" if c != first[position]])
        return "name-latin-typo", first[:position] + letter + first[position + 1 :] + " " + last
    return "name-latin-as-is", name


def _record(rng: random.Random, person: Person, *, duplicate: bool) -> Record:
    variants: list[str] = []
    drop: set[str] = set()
    if duplicate:
        for fieldname, chance in (("phone", 0.25), ("email", 0.35), ("company", 0.1), ("name", 0.05)):
            if rng.random() < chance:
                drop.add(fieldname)
        findable = (
            "phone" not in drop or ("email" not in drop and person.email) or not {"name", "company"} & drop
        )
        if not findable:
            drop.discard("phone")  # keep one key: see the module docstring
    name = phone = email = company = ""
    if "name" not in drop:
        kind, name = _name_variant(rng, person.name, person.latin)
        variants.append(kind)
    if "phone" not in drop:
        kind, phone = _phone_variant(rng, person.phone)
        variants.append(kind)
    if person.email and "email" not in drop:
        kind, email = _email_variant(rng, person.email)
        variants.append(kind)
    if "company" not in drop:
        kind, company = _company_variant(rng, person.company)
        variants.append(kind)
    variants.extend(f"missing-{f}" for f in sorted(drop))
    if person.negative:
        variants.append(f"negative-{person.negative}")
    return Record(person.group, name, phone, email, company, tuple(variants))


def generate(seed: int = 11, people: int = 1500) -> list[Record]:
    """About 1.65 records per person (55% once, 27% twice, 12% three times, 6% four times),
    shuffled as an import would meet them."""
    rng = random.Random(seed)
    records: list[Record] = []
    for person in _people(rng, people):
        copies = rng.choices((1, 2, 3, 4), weights=(55, 27, 12, 6))[0]
        records.append(_record(rng, person, duplicate=False))
        records.extend(_record(rng, person, duplicate=True) for _ in range(copies - 1))
    rng.shuffle(records)
    return records
