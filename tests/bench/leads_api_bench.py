"""Leads API benchmark at scale (issue 11's acceptance): with 1M leads on PostgreSQL,

1. **dedupe check** — ``scrm.leads.dedupe.find_matches``, the function ``POST /api/leads`` runs
   before it writes, for BENCH_DEDUPE_LOOKUPS keys mixing a phone hit, an email hit, a company
   hit with a name spelled alike, and a total miss: p50/p95/p99 (target p95 ≤ 20 ms). The same
   look-ups' bare SQL (the three exact-key queries and the company block, straight psycopg, no
   ORM) are the floor. The whole ``POST /api/leads`` through the Flask test client is timed too,
   for BENCH_POSTS posts (context, no target); these run last so the leads they write do not
   change the other parts' figures.
2. **the list's first page** — ``GET /api/leads`` through the Flask test client with a rep's key
   for ``owner_userid`` + ``status``, an admin's key for ``source``, a manager's key for
   ``q=<phone>``, BENCH_LIST_REQUESTS each: p50/p95 (target p95 ≤ 300 ms). The page's own
   ``SELECT … ORDER BY id DESC LIMIT 21`` and the total the API counts, each as bare SQL, are the
   floor, so a slow figure says whether the page or the count is what costs.

The database is its own (BENCH_LEADS_API_URL, dropped, recreated and migrated with
``scrm.migrations.upgrade``), filled by COPY from a seeded generator: 50 reps in 5 departments
with a manager each, 30% of leads in the pool, statuses and ~20 sources spread unevenly, E.164
phones on 90% and emails on half, ~150k companies with a long tail and one very big account
(its company_key computed by ``scrm.leads.normalize.company_key`` as capture would), 3% repeating
an earlier person's phone or email, 1% merged away. The lead table's plain indexes are dropped
for the load and built again after it, then ANALYZE; the fill time is printed.

Knobs: BENCH_LEADS_ROWS (1000000), BENCH_DEDUPE_LOOKUPS (2000), BENCH_LIST_REQUESTS (200),
BENCH_POSTS (200), BENCH_LEADS_API_URL, BENCH_KEEP_DB=1 (reuse a database filled by an earlier run
with the same row count instead of filling it again; the generator is replayed for its sample),
BENCH_ONLY (a subset of dedupe, list, post).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from config import load_settings
from scrm.leads.dedupe import Keys, find_matches
from scrm.leads.fields import parse_lead
from scrm.leads.normalize import company_key
from tests.bench.callback_bench import Figure, Part, percentile
from tests.bench.leads_bench import CITIES, FORMS, GIVEN, INDUSTRIES, SURNAMES, TITLES, WORDS

ROWS = int(os.environ.get("BENCH_LEADS_ROWS", "1000000"))
LOOKUPS = int(os.environ.get("BENCH_DEDUPE_LOOKUPS", "2000"))
LIST_REQUESTS = int(os.environ.get("BENCH_LIST_REQUESTS", "200"))
POSTS = int(os.environ.get("BENCH_POSTS", "200"))
URL = os.environ.get(
    "BENCH_LEADS_API_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/scrm_bench_leads_api"
)
KEEP_DB = os.environ.get("BENCH_KEEP_DB") == "1"
PARTS = ("dedupe", "list", "post")
ONLY = [name for name in os.environ.get("BENCH_ONLY", ",".join(PARTS)).split(",") if name]
SEED = 20261130

# The targets of issue 11's acceptance line.
TARGET_DEDUPE_P95_MS = 20.0
TARGET_LIST_P95_MS = 300.0

REPS = [f"rep{i:02d}" for i in range(1, 51)]
DEPARTMENTS = 5  # rep01-10 in department 11, … ; manager mgr1 heads department 11, …
POOL_SHARE = 0.30
STATUSES = [
    ("new", 0.30),
    ("assigned", 0.20),
    ("contacted", 0.20),
    ("qualified", 0.10),
    ("converted", 0.08),
    ("disqualified", 0.12),
]
SOURCES = [
    "web_form",
    "api",
    "import",
    "channel",
    "ad_baidu",
    "ad_douyin",
    "ad_wechat",
    "event",
    "referral",
    "partner",
    "cold_call",
    "exhibition",
    "seo",
    "webinar",
    "email",
    "sidebar",
    "console",
    "xiaohongshu",
    "zhihu",
    "other",
]
DUPLICATE_SHARE = 0.03
MERGED_SHARE = 0.01
BIG_ACCOUNT = "上海恒信科技有限公司"  # a big account whose staff are many leads (the block cap's case)
BIG_ACCOUNT_SHARE = 0.03
LATIN_GIVEN = ["michael", "jennifer", "jonathan", "christopher", "elizabeth", "alexander", "catherine"]
LATIN_FAMILY = ["richardson", "williamson", "henderson", "robertson", "anderson", "harrington"]
MOBILE_PREFIXES = ["138", "139", "186", "135", "150", "177", "188", "136", "158", "189"]
COLUMNS = (
    "id, name, phone_e164, email, company, company_key, title, region, industry, source, utm, "
    "notes, owner_userid, status, score, merged_into_id, assigned_at, created_at, updated_at"
)


def ms(seconds: float) -> float:
    return seconds * 1000.0


def psycopg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def postgres_available() -> bool:
    try:
        with psycopg.connect(psycopg_dsn(URL).rsplit("/", 1)[0] + "/postgres", connect_timeout=3):
            return True
    except psycopg.Error:
        return False


# --- the data -----------------------------------------------------------------------------------


@dataclass
class Person:
    name: str
    phone: str | None
    email: str | None
    company: str
    ckey: str


def _weighted(rnd: random.Random, pairs: list[tuple[str, float]]) -> str:
    return rnd.choices([p[0] for p in pairs], weights=[p[1] for p in pairs])[0]


def _name(rnd: random.Random) -> str:
    if rnd.random() < 0.08:  # a Latin name long enough for the typo rule (TYPO_MIN_LENGTH)
        return f"{rnd.choice(LATIN_GIVEN).title()} {rnd.choice(LATIN_FAMILY).title()}"
    return rnd.choice(SURNAMES) + "".join(rnd.choices(GIVEN, k=rnd.randint(1, 2)))


class Generator:
    """Seeded leads as COPY rows, and what the look-ups need to know about them."""

    def __init__(self, rows: int, seed: int = SEED) -> None:
        self.rows = rows
        self.rnd = random.Random(seed)
        rnd = self.rnd
        names = {
            rnd.choice(CITIES) + "".join(rnd.choices(WORDS, k=rnd.randint(2, 5))) + rnd.choice(FORMS)
            for _ in range(max(rows // 6, 20))
        }
        names.discard(BIG_ACCOUNT)
        self.companies = sorted(names)
        self.keys = {c: company_key(c) for c in self.companies}
        self.keys[BIG_ACCOUNT] = company_key(BIG_ACCOUNT)
        self.source_weights = [1 / (i + 1) for i in range(len(SOURCES))]  # a long tail
        # (id, owner, person) of about 1 live lead in 100
        self.sample: list[tuple[int, str | None, Person]] = []
        self.phones: set[str] = set()

    def _company(self) -> str:
        rnd = self.rnd
        if rnd.random() < BIG_ACCOUNT_SHARE:
            return BIG_ACCOUNT
        if rnd.random() < 0.1:
            return ""
        # Companies early in the list have more leads than those late in it (a long tail).
        return self.companies[int(len(self.companies) * rnd.random() ** 2)]

    def new_phone(self) -> str:
        while True:
            phone = f"+86{self.rnd.choice(MOBILE_PREFIXES)}{self.rnd.randrange(10**8):08d}"
            if phone not in self.phones:
                self.phones.add(phone)
                return phone

    def rows_(self) -> Iterator[tuple[Any, ...]]:
        rnd = self.rnd
        start = datetime(2025, 1, 1, tzinfo=UTC)
        span = (datetime(2026, 11, 1, tzinfo=UTC) - start).total_seconds()
        people: list[tuple[int, Person]] = []
        for lead_id in range(1, self.rows + 1):
            if people and rnd.random() < DUPLICATE_SHARE:
                _, earlier = rnd.choice(people)
                person = Person(
                    earlier.name if rnd.random() < 0.5 else _name(rnd),
                    earlier.phone if rnd.random() < 0.7 else None,
                    earlier.email,
                    earlier.company,
                    earlier.ckey,
                )
            else:
                company = self._company()
                person = Person(
                    _name(rnd),
                    self.new_phone() if rnd.random() < 0.9 else None,
                    f"u{lead_id}@example{lead_id % 97}.com" if rnd.random() < 0.5 else None,
                    company,
                    self.keys.get(company, "") if company else "",
                )
                if len(people) < 200_000:
                    people.append((lead_id, person))
                else:
                    people[rnd.randrange(len(people))] = (lead_id, person)
            merged = rnd.randrange(1, lead_id) if lead_id > 1 and rnd.random() < MERGED_SHARE else None
            owner = None if rnd.random() < POOL_SHARE else rnd.choice(REPS)
            if merged is None and lead_id % 100 == 0:
                self.sample.append((lead_id, owner, person))
            status = _weighted(rnd, STATUSES)
            if owner is None and status == "assigned":
                status = "new"
            created = start + timedelta(seconds=span * lead_id / self.rows)
            source = rnd.choices(SOURCES, weights=self.source_weights)[0]
            yield (
                lead_id,
                person.name,
                person.phone,
                person.email,
                person.company,
                person.ckey,
                rnd.choice(TITLES),
                rnd.choice(CITIES),
                rnd.choice(INDUSTRIES),
                source,
                "{}",
                "",
                owner,
                status,
                rnd.randrange(0, 100),
                merged,
                created if owner else None,
                created,
                created,
            )


def seed_directory() -> dict[str, str]:
    """Departments, reps, managers and an assignment rule, through scrm's own services; the keys."""
    from scrm.db import make_engine, make_session_factory, transaction
    from scrm.directory import service as directory
    from scrm.leads.models import AssignmentMember, AssignmentRule
    from scrm.schema import Department, Staff, StaffRole

    engine = make_engine(URL)
    factory = make_session_factory(engine)
    keys: dict[str, str] = {}
    with transaction(factory) as db:
        db.add(Department(department_id=1, name="销售部", parent_id=0))
        for d in range(DEPARTMENTS):
            db.add(Department(department_id=11 + d, name=f"销售{d + 1}组", parent_id=1))
            db.add(
                Staff(
                    userid=f"mgr{d + 1}", name=f"经理{d + 1}", role=StaffRole.MANAGER, department_ids=[11 + d]
                )
            )
        per = len(REPS) // DEPARTMENTS
        for i, rep in enumerate(REPS):
            db.add(Staff(userid=rep, name=rep, role=StaffRole.REP, department_ids=[11 + i // per]))
        rule = AssignmentRule(name="round robin", priority=100)
        rule.members = [AssignmentMember(userid=rep, position=i) for i, rep in enumerate(REPS)]
        db.add(rule)
        db.flush()
        for name, role, userid in (
            ("admin", "admin", None),
            ("rep", "rep", "rep07"),
            ("manager", "manager", "mgr1"),
        ):
            _row, keys[name] = directory.create_api_key(db, f"bench-{name}", role, userid)
    engine.dispose()
    return keys


def fill(generator: Generator) -> tuple[float, dict[str, str]]:
    """A fresh migrated database with ``generator``'s leads; the seconds it took and the API keys."""
    from scrm.migrations import upgrade

    began = time.perf_counter()
    db = make_url(URL).database
    admin_engine = create_engine(make_url(URL).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    admin_engine.dispose()
    upgrade(URL)
    with psycopg.connect(psycopg_dsn(URL)) as conn:
        keys = seed_directory()
        # Plain indexes are built once after the load, as pg_restore does, rather than row by row.
        plain = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'leads' AND indexname NOT IN "
            "(SELECT conname FROM pg_constraint WHERE conrelid = 'leads'::regclass)"
        ).fetchall()
        for indexname, _ in plain:
            conn.execute(f'DROP INDEX "{indexname}"')
        generated = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY leads ({COLUMNS}) FROM STDIN") as copy:
            for row in generator.rows_():
                copy.write_row(row)
        copied = time.perf_counter()
        for _, indexdef in plain:
            conn.execute(indexdef)
        conn.execute(f"SELECT setval('leads_id_seq', {generator.rows})")
        conn.commit()
        indexed = time.perf_counter()
    with psycopg.connect(psycopg_dsn(URL), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE leads")
    total = time.perf_counter() - began
    print(
        f"fill: {generator.rows:,} leads in {total:.0f} s (schema {generated - began:.0f} s, generate + COPY "
        f"{copied - generated:.0f} s, {len(plain)} indexes {indexed - copied:.0f} s, VACUUM ANALYZE "
        f"{time.perf_counter() - indexed:.0f} s)",
        flush=True,
    )
    return total, keys


def reuse_keys() -> dict[str, str]:
    """Fresh keys on a database kept from an earlier run (secrets are shown only once)."""
    from scrm.db import make_engine, make_session_factory, transaction
    from scrm.directory import service as directory

    engine = make_engine(URL)
    keys: dict[str, str] = {}
    with transaction(make_session_factory(engine)) as db:
        stamp = int(time.time())
        for name, role, userid in (
            ("admin", "admin", None),
            ("rep", "rep", "rep07"),
            ("manager", "manager", "mgr1"),
        ):
            _row, keys[name] = directory.create_api_key(db, f"bench-{name}-{stamp}", role, userid)
    engine.dispose()
    return keys


# --- dedupe -------------------------------------------------------------------------------------


def _typo(name: str, rnd: random.Random) -> str:
    """One letter of a long Latin name swapped with its neighbour (scores ≥ 0.9); a Chinese name as
    written (short names must be equal to match)."""
    if not name.isascii() or len(name) < 14:
        return name
    at = rnd.randrange(1, len(name) - 2)
    if name[at] == " " or name[at + 1] == " ":
        return name
    return name[:at] + name[at + 1] + name[at] + name[at + 2 :]


def lookups(generator: Generator, count: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """(kind, raw POST body) for ``count`` look-ups: phone hit, email hit, company hit, miss.
    Another ``seed`` gives other people, so the posts' leads are not the dedupe part's misses."""
    rnd = random.Random(seed)
    phones = [p.phone for _, _, p in generator.sample if p.phone]
    emails = [p.email for _, _, p in generator.sample if p.email]
    with_company = [p for _, _, p in generator.sample if p.ckey]
    big = [p for _, _, p in generator.sample if p.company == BIG_ACCOUNT]
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(count):
        kind = ("phone hit", "email hit", "company hit", "miss")[i % 4]
        if kind == "phone hit":
            body = {
                "name": _name(rnd),
                "phone": rnd.choice(phones)[3:],
                "company": rnd.choice(generator.companies),
            }
        elif kind == "email hit":
            body = {
                "name": _name(rnd),
                "email": rnd.choice(emails).upper(),
                "phone": generator.new_phone()[3:],
            }
        elif kind == "company hit":
            # One in five against the big account, whose block is the company's newest 500.
            p = rnd.choice(big if big and i % 20 == 2 else with_company)
            body = {"name": _typo(p.name, rnd), "company": p.company.replace("有限公司", "（上海）有限公司")}
        else:
            body = {
                "name": _name(rnd),
                "phone": generator.new_phone()[3:],
                "email": f"new{seed}-{i}@nowhere{i % 13}.cn",
                "company": rnd.choice(CITIES) + "新开" + "".join(rnd.choices(WORDS, k=4)) + "有限公司",
            }
        out.append((kind, body))
    return out


def dedupe_part(generator: Generator) -> Part:
    from scrm.db import make_engine, make_session_factory
    from scrm.leads.dedupe import BLOCK_CAP

    part = Part(f"dedupe check: find_matches × {LOOKUPS} against {generator.rows:,} leads")
    checks = [(kind, Keys.of_input(parse_lead(body))) for kind, body in lookups(generator, LOOKUPS, SEED + 1)]
    engine = make_engine(URL)
    factory = make_session_factory(engine)
    times: dict[str, list[float]] = {}
    hits: dict[str, int] = {}
    with factory() as session:
        for kind, keys in checks[:100]:  # warm-up: connections, statement caches
            find_matches(session, keys)
        session.rollback()
        for n, (kind, keys) in enumerate(checks):
            t0 = time.perf_counter()
            found = find_matches(session, keys)
            times.setdefault(kind, []).append(ms(time.perf_counter() - t0))
            hits[kind] = hits.get(kind, 0) + bool(found)
            if n % 50 == 49:
                session.rollback()
        session.rollback()
    engine.dispose()
    # The floor: the same queries as bare SQL on one psycopg connection (prepared by psycopg).
    floor: list[float] = []
    live = "merged_into_id IS NULL"
    with psycopg.connect(psycopg_dsn(URL), autocommit=True, prepare_threshold=None) as conn:
        for n, (_kind, keys) in enumerate(checks[:100] + checks):
            t0 = time.perf_counter()
            for column, value in (
                ("phone_e164", keys.phone_e164),
                ("email", keys.email),
                ("unionid", keys.unionid),
            ):
                if value:
                    conn.execute(
                        f"SELECT id FROM leads WHERE {column} = %s AND {live} ORDER BY id LIMIT 5", (value,)
                    ).fetchall()
            if keys.company_key and keys.name_key:
                conn.execute(
                    f"SELECT id, name FROM leads WHERE company_key = %s AND {live} ORDER BY id DESC LIMIT %s",
                    (keys.company_key, BLOCK_CAP),
                ).fetchall()
            if n >= 100:
                floor.append(ms(time.perf_counter() - t0))
    every = [t for ts in times.values() for t in ts]
    p95 = percentile(every, 95)
    part.figures.append(
        Figure(
            "find_matches p95",
            p95,
            "ms",
            f"<= {TARGET_DEDUPE_P95_MS:.0f} ms",
            p95 <= TARGET_DEDUPE_P95_MS,
            f"p50 {percentile(every, 50):.1f}, p99 {percentile(every, 99):.1f}, max {max(every):.1f}",
        )
    )
    floor_p95 = percentile(floor, 95)
    part.figures.append(
        Figure(
            "floor: the same SQL on psycopg p95",
            floor_p95,
            "ms",
            note=f"p50 {percentile(floor, 50):.1f}, p99 {percentile(floor, 99):.1f}; "
            f"find_matches ÷ floor at p95 {p95 / floor_p95:.2f}×",
        )
    )
    for kind, ts in times.items():
        part.details.append(
            f"{kind:12} p50 {percentile(ts, 50):5.1f}  p95 {percentile(ts, 95):5.1f}  p99 {percentile(ts, 99):5.1f} ms; "
            f"{hits[kind]} of {len(ts)} found a match"
        )
    return part


# --- the API through the Flask test client -----------------------------------------------------


class Client:
    def __init__(self, keys: dict[str, str]) -> None:
        from scrm.app import create_app

        settings = load_settings(
            {"SCRM_DATABASE_URL": URL, "SCRM_LOG_LEVEL": "WARNING", "SCRM_DISPATCH_THREADS": "0"}
        )
        self.app = create_app(settings, mount_sandbox=False)
        self.client = self.app.test_client()
        self.keys = keys

    def call(self, method: str, path: str, key: str, **kwargs: Any) -> tuple[float, Any]:
        t0 = time.perf_counter()
        resp = self.client.open(
            path, method=method, headers={"Authorization": f"Bearer {self.keys[key]}"}, **kwargs
        )
        took = ms(time.perf_counter() - t0)
        if resp.status_code >= 300:
            raise RuntimeError(
                f"{method} {path} answered {resp.status_code}: {resp.get_data(as_text=True)[:300]}"
            )
        return took, resp.get_json()

    def close(self) -> None:
        self.app.extensions["scrm"].ctx.engine.dispose()


@dataclass
class ListCase:
    name: str
    key: str
    query: dict[str, str]
    page_sql: str
    count_sql: str
    params: tuple[Any, ...]


def list_cases(generator: Generator) -> list[ListCase]:
    rnd = random.Random(SEED + 2)
    # A phone the manager (mgr1: rep01-rep10) sees: in the pool or one of theirs.
    phones = [
        p.phone for _, owner, p in generator.sample if p.phone and (owner is None or owner in REPS[:10])
    ]
    phone = rnd.choice(phones)
    live = "merged_into_id IS NULL"
    rep_vis = "(owner_userid IS NULL OR owner_userid IN ('rep07'))"
    mgr_vis = "(owner_userid IS NULL OR owner_userid IN (" + ", ".join(f"'{r}'" for r in REPS[:10]) + "))"
    return [
        ListCase(
            "no filter (admin key)",
            "admin",
            {},
            f"SELECT * FROM leads WHERE {live} ORDER BY id DESC LIMIT 21",
            f"SELECT count(*) FROM leads WHERE {live}",
            (),
        ),
        ListCase(
            "owner+status (rep key)",
            "rep",
            {"owner_userid": "rep07", "status": "contacted"},
            f"SELECT * FROM leads WHERE {live} AND {rep_vis} AND status = %s AND owner_userid = %s ORDER BY id DESC LIMIT 21",
            f"SELECT count(*) FROM leads WHERE {live} AND {rep_vis} AND status = %s AND owner_userid = %s",
            ("contacted", "rep07"),
        ),
        ListCase(
            "source (admin key)",
            "admin",
            {"source": SOURCES[0]},
            f"SELECT * FROM leads WHERE {live} AND source = %s ORDER BY id DESC LIMIT 21",
            f"SELECT count(*) FROM leads WHERE {live} AND source = %s",
            (SOURCES[0],),
        ),
        ListCase(
            "source (rep key)",
            "rep",
            {"source": SOURCES[0]},
            f"SELECT * FROM leads WHERE {live} AND {rep_vis} AND source = %s ORDER BY id DESC LIMIT 21",
            f"SELECT count(*) FROM leads WHERE {live} AND {rep_vis} AND source = %s",
            (SOURCES[0],),
        ),
        ListCase(
            "q=<phone> (manager key)",
            "manager",
            {"q": f"{phone[3:6]} {phone[6:10]} {phone[10:]}"},
            f"SELECT * FROM leads WHERE {live} AND {mgr_vis} AND phone_e164 = %s ORDER BY id DESC LIMIT 21",
            f"SELECT count(*) FROM leads WHERE {live} AND {mgr_vis} AND phone_e164 = %s",
            (phone,),
        ),
    ]


def timed_sql(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...], n: int) -> list[float]:
    out = []
    for i in range(n + 5):
        t0 = time.perf_counter()
        conn.execute(sql, params).fetchall()
        if i >= 5:
            out.append(ms(time.perf_counter() - t0))
    return out


def list_part(generator: Generator, client: Client) -> Part:
    part = Part(
        f"the list's first page: GET /api/leads (limit 20) × {LIST_REQUESTS} each, {generator.rows:,} leads"
    )
    with psycopg.connect(psycopg_dsn(URL), autocommit=True, prepare_threshold=None) as conn:
        for case in list_cases(generator):
            path = "/api/leads?" + "".join(f"{k}={v}&" for k, v in case.query.items()) + "limit=20"
            for _ in range(5):
                client.call("GET", path, case.key)
            times = []
            total = None
            for _ in range(LIST_REQUESTS):
                took, body = client.call("GET", path, case.key)
                times.append(took)
                total = body["page"]["total"]
            page_floor = timed_sql(conn, case.page_sql, case.params, LIST_REQUESTS)
            count_floor = timed_sql(conn, case.count_sql, case.params, min(LIST_REQUESTS, 50))
            p95 = percentile(times, 95)
            part.figures.append(
                Figure(
                    f"{case.name} p95",
                    p95,
                    "ms",
                    f"<= {TARGET_LIST_P95_MS:.0f} ms",
                    p95 <= TARGET_LIST_P95_MS,
                    f"p50 {percentile(times, 50):.1f}; total {total}; floor p95: page SQL "
                    f"{percentile(page_floor, 95):.1f}, count SQL {percentile(count_floor, 95):.1f} ms",
                )
            )
    return part


def post_part(generator: Generator, client: Client) -> Part:
    """The whole POST /api/leads (parse, dedupe, insert, duplicate pairs, assignment, timeline,
    score, commit), half new people and half exact duplicates flagged."""
    part = Part(f"POST /api/leads through the Flask test client × {POSTS} (writes {POSTS} leads; runs last)")
    bodies = [body for _, body in lookups(generator, POSTS + 20, SEED + 3)]
    for body in bodies[:20]:
        client.call("POST", "/api/leads", "admin", json=body)
    times = [client.call("POST", "/api/leads", "admin", json=body)[0] for body in bodies[20:]]
    part.figures.append(
        Figure(
            "POST /api/leads p95",
            percentile(times, 95),
            "ms",
            note=f"p50 {percentile(times, 50):.1f}, p99 {percentile(times, 99):.1f} (no target: context)",
        )
    )
    return part


def kept_generator() -> Generator | None:
    """The generator of a database an earlier run filled with as many rows (BENCH_KEEP_DB=1)."""
    try:
        with psycopg.connect(psycopg_dsn(URL)) as conn:
            row = conn.execute("SELECT max(id) FROM leads WHERE id <= %s", (ROWS,)).fetchone()
    except psycopg.Error:
        return None
    if row is None or row[0] != ROWS:
        return None
    with psycopg.connect(psycopg_dsn(URL)) as conn:
        # What an earlier run's posts wrote goes, so that its leads match no look-up.
        refs = conn.execute(
            "SELECT c.conrelid::regclass::text, a.attname FROM pg_constraint c JOIN pg_attribute a "
            "ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
            "WHERE c.contype = 'f' AND c.confrelid = 'leads'::regclass AND c.conrelid <> 'leads'::regclass"
        ).fetchall()
        for table, column in refs:
            conn.execute(f'DELETE FROM {table} WHERE "{column}" > %s', (ROWS,))
        conn.execute("DELETE FROM leads WHERE id > %s", (ROWS,))
        conn.execute(f"SELECT setval('leads_id_seq', {ROWS})")
    generator = Generator(ROWS)
    for _ in generator.rows_():  # replays the seeded generator for its sample of leads
        pass
    return generator


def main() -> int:
    unknown = set(ONLY) - set(PARTS)
    if unknown:
        raise SystemExit(f"BENCH_ONLY: unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    if not postgres_available():
        print(
            f"PostgreSQL is not reachable at {make_url(URL).host}:{make_url(URL).port}; the leads API benchmark is skipped"
        )
        return 0
    started = time.monotonic()
    generator = kept_generator() if KEEP_DB else None
    fill_s = None
    if generator is None:
        generator = Generator(ROWS)
        fill_s, keys = fill(generator)
    else:
        keys = reuse_keys()
        print(f"fill: reusing the {ROWS:,} leads already in {make_url(URL).database}", flush=True)
    parts = [dedupe_part(generator)] if "dedupe" in ONLY else []
    client = Client(keys)
    try:
        if "list" in ONLY:
            parts.append(list_part(generator, client))
        if "post" in ONLY:
            parts.append(post_part(generator, client))
    finally:
        client.close()
    print()
    print(f"leads API benchmark on {os.cpu_count()} cores, PostgreSQL, {time.monotonic() - started:.0f} s")
    if fill_s is not None:
        print(f"  fill {ROWS:,} leads: {fill_s:.0f} s")
    for part in parts:
        print()
        print(part.title)
        for figure in part.figures:
            print(figure.line())
        for detail in part.details:
            print(f"        {detail}")
    checked = [f for part in parts for f in part.figures if f.passed is not None]
    failed = [f.name for f in checked if not f.passed]
    print()
    print(
        f"{len(checked) - len(failed)} of {len(checked)} targets met"
        + (f"; missed: {', '.join(failed)}" if failed else "")
    )
    print(
        json.dumps(
            {p.title.split(":")[0]: {f.name: round(f.value, 2) for f in p.figures} for p in parts},
            ensure_ascii=False,
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
