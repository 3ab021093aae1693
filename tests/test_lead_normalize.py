"""The normalised keys dedupe and linking compare: every way a phone, an email, a company or a
name is written down that is still the same one agrees, and different ones stay apart."""

from __future__ import annotations

import pytest

from scrm.leads.normalize import company_key, email_key, fold_width, mask_phone, name_key, phone_e164

PHONE_FORMS = [
    "13800138000",
    "138 0013 8000",
    "138-0013-8000",
    "+86 138 0013 8000",
    "+8613800138000",
    "+86-138-0013-8000",
    "0086 13800138000",
    "0086-138-0013-8000",
    "(+86) 138-0013-8000",
    "（+86）138 0013 8000",
    "86 13800138000",
    "１３８００１３８０００",
    "１３８\u3000００１３\u3000８０００",
    "+８６ １３８００１３８０００",
    " 138 0013 8000 ",
]


@pytest.mark.parametrize("raw", PHONE_FORMS)
def test_every_phone_form_is_one_e164(raw: str) -> None:
    assert phone_e164(raw) == "+8613800138000"


@pytest.mark.parametrize("raw", ["", "   ", "12345", "not a phone", "138001380001234", None])
def test_what_is_not_a_phone_has_no_key(raw: str | None) -> None:
    assert phone_e164(raw) is None


def test_a_different_number_is_a_different_key() -> None:
    assert phone_e164("138-0013-8001") == "+8613800138001"
    assert phone_e164("+1 650 253 0000") == "+16502530000"


def test_phones_are_masked_for_pages_and_logs() -> None:
    assert mask_phone("+8613800138000") == "+86138****8000"
    assert mask_phone(None) == ""


@pytest.mark.parametrize(
    "raw",
    ["Zhang.San@Example.com", "  zhang.san@example.com ", "ZHANG.SAN@EXAMPLE.COM", "zhang.san＠example.com"],
)
def test_email_case_width_and_spaces_agree(raw: str) -> None:
    assert email_key(raw) == "zhang.san@example.com"


def test_what_is_not_an_email_has_no_key() -> None:
    assert email_key("zhang.san") is None
    assert email_key("") is None


CHINESE_COMPANY_FORMS = [
    "奇点科技",
    "奇点科技有限公司",
    "奇点科技有限责任公司",
    "奇点科技股份有限公司",
    "奇点科技集团",
    "奇点科技集团有限公司",
    "上海奇点科技有限公司",
    "上海市奇点科技有限公司",
    "奇点科技（上海）有限公司",
    "奇点科技(上海)有限公司",
    "奇点 科技 有限公司",
    "  奇点科技有限公司。",
]
ENGLISH_COMPANY_FORMS = [
    "Acme Robotics",
    "Acme Robotics Co., Ltd.",
    "Acme Robotics Co.,Ltd",
    "Acme Robotics Co Ltd",
    "Acme Robotics Ltd",
    "Acme Robotics Limited",
    "Acme Robotics Inc.",
    "ACME ROBOTICS INC",
    "acme robotics (Shanghai) Co., Ltd.",
    "Shanghai Acme Robotics Co., Ltd.",
    "Acme Robotics Co．，Ltd．",
    "Ａｃｍｅ Ｒｏｂｏｔｉｃｓ",
]


@pytest.mark.parametrize("raw", CHINESE_COMPANY_FORMS)
def test_chinese_company_variants_agree(raw: str) -> None:
    assert company_key(raw) == "奇点科技"


@pytest.mark.parametrize("raw", ENGLISH_COMPANY_FORMS)
def test_english_company_variants_agree(raw: str) -> None:
    assert company_key(raw) == "acmerobotics"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("奇点科技有限公司", "奇点贸易有限公司"),  # one trade name, two trades
        ("上海银行", "北京银行"),  # a city and a generic word keep the city
        ("奇点科技", "奇典科技"),
        ("Acme Robotics Inc.", "Acme Software Inc."),
        ("Acme Robotics", "Acme Robotic Arms"),
    ],
)
def test_different_companies_differ(a: str, b: str) -> None:
    assert company_key(a) != company_key(b)


def test_a_name_that_is_only_a_legal_form_or_a_city_keeps_it() -> None:
    assert company_key("有限公司") == "有限公司"
    assert company_key("上海") == "上海"
    assert company_key("") == ""


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("张三", "张 三"),
        ("张三", "张\u3000三"),
        ("Zhang Wei", "zhang wei"),
        ("Zhang Wei", "Wei Zhang"),
        ("Zhang Wei", "ＺＨＡＮＧ　ＷＥＩ"),
        ("Mary-Jane Watson", "mary jane watson"),
    ],
)
def test_name_spellings_agree(a: str, b: str) -> None:
    assert name_key(a) == name_key(b)


def test_a_chinese_name_keeps_its_order() -> None:
    assert name_key("张 三") != name_key("三 张")
    assert name_key("王建国") != name_key("王建华")


def test_fold_width() -> None:
    assert fold_width("　ＡＢＣ１２３，") == "ABC123,"
