"""Lead import benchmark (``make bench-leads``): 100k leads from a CSV file with dedupe, beside a
plain bulk insert of the same rows without dedupe, in the same run, on SQLite and (when reachable)
PostgreSQL.

The file is generated (seeded): 100k rows of Chinese leads with names, phones, emails on about
half, companies, titles, regions and industries; about 5% repeat an earlier row's person in
another spelling (the phone as ``+86 138-0013-8000``, the email in capitals, a new title).

Per database, each on a fresh schema:

- **plain**: read the file, ``parse_lead`` every row, ``build_lead``, ``insert_leads`` (``add_all``
  + flush) per 1,000 rows in one transaction: the same insert path with no dedupe at all.
- **import**: ``create_import`` + ``run_import``: the same, plus the in-memory dedupe index (against
  live leads and earlier rows), flagging duplicates, the import's row and its audit row.

Targets: import ≤ 60 s, and import / plain ≤ 3. Knobs: BENCH_LEADS_ROWS (100000),
BENCH_LEADS_PG_URL (postgresql+psycopg://postgres@127.0.0.1:5432/scrm_bench_leads; empty to skip).
"""

from __future__ import annotations

import csv
import io
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from scrm import schema  # noqa: F401 - every table known before the first insert
from scrm.db import make_engine, make_session_factory, transaction
from scrm.leads import importing
from scrm.leads.fields import parse_lead
from scrm.leads.service import build_lead

ROWS = int(os.environ.get("BENCH_LEADS_ROWS", "100000"))
PG_URL = os.environ.get("BENCH_LEADS_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/scrm_bench_leads")
TARGET_SECONDS = 60.0
TARGET_RATIO = 3.0
DUPLICATE_SHARE = 0.05

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
)
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国志红玉兰文辉晓东海燕鹏飞宇航欣怡子涵浩然"
CITIES = ["上海", "北京", "深圳", "广州", "杭州", "成都", "南京", "武汉", "苏州", "西安"]
INDUSTRIES = ["制造", "零售", "教育", "医疗", "金融", "软件", "物流", "餐饮", "地产", "能源"]
TITLES = ["经理", "总监", "采购", "工程师", "总经理", "主管", "专员", "助理"]
WORDS = "华兴盛达恒信远宏泰安康瑞丰源鑫隆昌永创新科技德润金通中"
FORMS = ["有限公司", "有限责任公司", "股份有限公司", "集团", "科技有限公司"]
HEADERS = ["姓名", "手机", "邮箱", "公司", "职位", "地区", "行业", "备注"]


def generate(rows: int, seed: int = 20261129) -> tuple[bytes, int]:
    """The CSV file's bytes and how many rows repeat an earlier person."""
    rnd = random.Random(seed)
    companies = [
        rnd.choice(CITIES) + "".join(rnd.choices(WORDS, k=rnd.randint(2, 4))) + rnd.choice(FORMS)
        for _ in range(max(rows // 5, 10))
    ]
    people: list[list[str]] = []
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(HEADERS)
    phones: set[str] = set()
    duplicates = 0
    for i in range(rows):
        if people and rnd.random() < DUPLICATE_SHARE:
            row = list(rnd.choice(people))
            variant = rnd.randrange(3)
            if variant == 0 and row[1]:
                row[1] = f"+86 {row[1][:3]}-{row[1][3:7]}-{row[1][7:]}"
            elif variant == 1 and row[2]:
                row[2] = row[2].upper()
            else:
                row[4] = rnd.choice(TITLES)
            duplicates += 1
        else:
            phone = ""
            while not phone or phone in phones:
                phone = rnd.choice(["138", "139", "186", "135", "150", "177"]) + f"{rnd.randrange(10**8):08d}"
            phones.add(phone)
            name = rnd.choice(SURNAMES) + "".join(rnd.choices(GIVEN, k=rnd.randint(1, 2)))
            email = f"u{i}@example.com" if rnd.random() < 0.5 else ""
            row = [
                name,
                phone,
                email,
                rnd.choice(companies),
                rnd.choice(TITLES),
                rnd.choice(CITIES),
                rnd.choice(INDUSTRIES),
                "展会名单" if rnd.random() < 0.2 else "",
            ]
            people.append(row)
        writer.writerow(row)
    return out.getvalue().encode("utf-8"), duplicates


def fresh_schema(url: str) -> None:
    from scrm.migrations import upgrade

    if url.startswith("postgresql"):
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    upgrade(url)


def plain_insert(factory: sessionmaker[Session], path: Path) -> int:
    """The same rows through the same insert path, no dedupe: the baseline."""
    sheet = importing.read_sheet(path)
    column_map = importing.resolve_column_map(sheet.headers)
    indexes = {name: sheet.headers.index(header) for name, header in column_map.items()}
    written = 0
    with transaction(factory) as session:
        chunk = []
        for _, cells in sheet.rows:
            raw = {name: cells[i] or None for name, i in indexes.items()}
            chunk.append(build_lead(parse_lead(raw, default_source="import")))
            if len(chunk) == importing.CHUNK_ROWS:
                importing.insert_leads(session, chunk)
                written += len(chunk)
                chunk = []
        importing.insert_leads(session, chunk)
        written += len(chunk)
    return written


def dedupe_import(factory: sessionmaker[Session], path: Path) -> importing.ImportReport:
    sheet = importing.read_sheet(path)
    with transaction(factory) as session:
        import_id = importing.create_import(
            session,
            filename=str(path),
            column_map=importing.resolve_column_map(sheet.headers),
            on_duplicate="flag",
            created_by="bench",
            total_rows=len(sheet.rows),
        ).id
    return importing.run_import(factory, import_id, sheet=sheet)


def measure(label: str, url: str, path: Path) -> bool:
    """Each run on a fresh schema (a new file on SQLite). Not emptied in between: deleting 100k
    leads on SQLite checks leads.duplicate_of_id and merged_into_id, which have no index, for
    every deleted row."""
    fresh_schema(url)
    engine = make_engine(url)
    try:
        t0 = time.perf_counter()
        plain_rows = plain_insert(make_session_factory(engine), path)
        plain_s = time.perf_counter() - t0
        print(
            f"{label}: plain bulk insert {plain_rows} rows {plain_s:6.1f} s ({plain_rows / plain_s:,.0f} rows/s)",
            flush=True,
        )
    finally:
        engine.dispose()
    url = url.replace("bench.db", "bench-import.db")
    fresh_schema(url)
    engine = make_engine(url)
    try:
        t0 = time.perf_counter()
        report = dedupe_import(make_session_factory(engine), path)
        import_s = time.perf_counter() - t0
    finally:
        engine.dispose()
    ratio = import_s / plain_s
    print(f"{label}: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    ok = import_s <= TARGET_SECONDS and ratio <= TARGET_RATIO
    print(
        f"{label}: import with dedupe {report.processed_rows} rows {import_s:6.1f} s "
        f"({report.processed_rows / import_s:,.0f} rows/s): created {report.created}, flagged "
        f"{report.flagged}, merged {report.merged}, skipped {report.skipped}, errors {report.error_count}"
    )
    print(
        f"{label}: import {import_s:.1f} s (target ≤ {TARGET_SECONDS:.0f} s), ratio import/plain {ratio:.2f} "
        f"(target ≤ {TARGET_RATIO:.0f}) → {'PASS' if ok else 'FAIL'}",
        flush=True,
    )
    return ok


def postgres_url() -> str | None:
    if not PG_URL:
        return None
    url = make_url(PG_URL)
    try:
        admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database})
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{url.database}"'))
        admin.dispose()
    except Exception as error:  # noqa: BLE001 - no PostgreSQL here: measure SQLite alone
        print(f"postgresql: not reachable at {url.render_as_string()} ({type(error).__name__}); skipped")
        return None
    return url.render_as_string(hide_password=False)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="scrm-bench-leads-") as tmp:
        path = Path(tmp) / "leads.csv"
        data, duplicates = generate(ROWS)
        path.write_bytes(data)
        print(
            f"file: {ROWS} rows ({duplicates} repeat an earlier person), {len(data) / 1e6:.1f} MB", flush=True
        )
        results = [measure("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}", path)]
        pg = postgres_url()
        if pg:
            results.append(measure("postgresql", pg, path))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
