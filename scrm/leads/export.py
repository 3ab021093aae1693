"""Exports of the console's lists (CSV and XLSX): the rows a filter selects, in its order,
streamed from one query in batches (never the whole list in memory), and the audit row every
export leaves (who, which list and filters, how many rows).

One writer serves every list: a ``Sheet`` names its columns (a bilingual header and how to read
the cell from a row) and the XLSX sheet's title; ``write_sheet`` writes any SELECT of its rows.
The leads list (``LEADS``, ``write``/``record_export`` with a LeadFilter) and the customers list
(``CUSTOMERS``, its SELECT built by the console from the list's filters) use it.

The columns are what a sales team reads: bilingual headers, owner and channel by name, times as
Asia/Shanghai wall clock. Phones and emails are exported in full (an export exists to call and
write to people); the audit log is what keeps that accountable. Text a spreadsheet would run as a
formula (a cell starting with ``=``, ``+``, ``-``, ``@``) is written as text: a ``'`` in front in
CSV, a string cell in XLSX.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import IO, Any, Generic, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from scrm.audit.models import AuditEntry
from scrm.audit.service import record
from scrm.channels.models import Channel
from scrm.customers.models import Customer
from scrm.directory.models import Staff
from scrm.leads import queries
from scrm.leads.models import Lead
from scrm.timeutil import SHANGHAI

BATCH = 1000
FORMATS = ("csv", "xlsx")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?$")


@dataclass(frozen=True)
class Names:
    """Display names the rows need, loaded once per export (staff and channels are few)."""

    staff: dict[str, str]
    channels: dict[int, str]


def _names(session: Session) -> Names:
    return Names(
        staff={u: n or u for u, n in session.execute(select(Staff.userid, Staff.name))},
        channels={i: n for i, n in session.execute(select(Channel.id, Channel.name))},
    )


def _local(moment: datetime | None) -> datetime | None:
    # Spreadsheets have no time zones: the wall clock the console shows, without its offset.
    return moment.astimezone(SHANGHAI).replace(tzinfo=None, microsecond=0) if moment else None


Row = TypeVar("Row")


@dataclass(frozen=True)
class Sheet(Generic[Row]):
    """One list's export: its columns (header, how to read the cell) and the XLSX sheet's title."""

    title: str
    columns: tuple[tuple[str, Callable[[Row, Names], Any]], ...]

    @property
    def headers(self) -> list[str]:
        return [header for header, _get in self.columns]


COLUMNS: tuple[tuple[str, Callable[[Lead, Names], Any]], ...] = (
    ("编号 ID", lambda lead, n: lead.id),
    ("姓名 Name", lambda lead, n: lead.name),
    ("手机 Phone", lambda lead, n: lead.phone_e164 or ""),
    ("邮箱 Email", lambda lead, n: lead.email or ""),
    ("公司 Company", lambda lead, n: lead.company),
    ("职位 Title", lambda lead, n: lead.title),
    ("地区 Region", lambda lead, n: lead.region),
    ("行业 Industry", lambda lead, n: lead.industry),
    ("来源 Source", lambda lead, n: lead.source),
    ("渠道 Channel", lambda lead, n: n.channels.get(lead.channel_id, "") if lead.channel_id else ""),
    ("状态 Status", lambda lead, n: lead.status.value),
    ("无效原因 Disqualified reason", lambda lead, n: lead.disqualified_reason),
    ("等级 Grade", lambda lead, n: lead.grade.value if lead.grade else ""),
    ("评分 Score", lambda lead, n: lead.score),
    (
        "负责人 Owner",
        lambda lead, n: n.staff.get(lead.owner_userid, lead.owner_userid) if lead.owner_userid else "",
    ),
    ("负责人账号 Owner userid", lambda lead, n: lead.owner_userid or ""),
    ("疑似重复 Duplicate of", lambda lead, n: lead.duplicate_of_id or ""),
    ("客户 Customer", lambda lead, n: lead.customer_id or ""),
    ("最近跟进 Last follow-up", lambda lead, n: _local(lead.last_follow_up_at)),
    ("下次跟进 Next follow-up", lambda lead, n: _local(lead.next_follow_up_at)),
    ("创建时间 Created", lambda lead, n: _local(lead.created_at)),
    ("备注 Notes", lambda lead, n: lead.notes),
)
HEADERS = tuple(header for header, _get in COLUMNS)
LEADS: Sheet[Lead] = Sheet("线索 Leads", COLUMNS)

CUSTOMER_KINDS = {"company": "企业 Company", "person": "个人 Person"}
CUSTOMERS: Sheet[Customer] = Sheet(
    "客户 Customers",
    (
        ("编号 ID", lambda c, n: c.id),
        ("名称 Name", lambda c, n: c.name),
        ("类型 Kind", lambda c, n: CUSTOMER_KINDS.get(c.kind.value, c.kind.value)),
        ("地区 Region", lambda c, n: c.region),
        ("行业 Industry", lambda c, n: c.industry),
        ("负责人 Owner", lambda c, n: n.staff.get(c.owner_userid, c.owner_userid) if c.owner_userid else ""),
        ("负责人账号 Owner userid", lambda c, n: c.owner_userid or ""),
        ("最近跟进 Last follow-up", lambda c, n: _local(c.last_follow_up_at)),
        ("下次跟进 Next follow-up", lambda c, n: _local(c.next_follow_up_at)),
        ("创建时间 Created", lambda c, n: _local(c.created_at)),
    ),
)


def sheet_rows(session: Session, sheet: Sheet[Row], stmt: Select[Row]) -> Iterator[list[Any]]:
    """The export's rows (without the header) of what ``stmt`` selects, in its order: one
    query, fetched ``BATCH`` rows at a time."""
    names = _names(session)
    for row in session.scalars(stmt.execution_options(yield_per=BATCH)):
        yield [get(row, names) for _header, get in sheet.columns]


def rows(session: Session, f: queries.LeadFilter) -> Iterator[list[Any]]:
    """The leads export's rows for the leads ``f`` selects, in its sort order."""
    return sheet_rows(session, LEADS, queries.select_leads(f))


def _as_text(value: str) -> bool:
    """Would a spreadsheet read this text as a formula? (A signed number, e.g. an E.164 phone,
    is only a number.)"""
    return value.startswith(_FORMULA_START) and not _NUMBER.match(value)


def _csv_cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, str) and _as_text(value):
        return "'" + value
    return value


def write_csv(headers: list[str], rows: Iterator[list[Any]], out: IO[bytes]) -> int:
    """Write the CSV (UTF-8 with a BOM, so Excel reads the Chinese) to ``out``; how many rows."""
    out.write(codecs.BOM_UTF8)
    text = codecs.getwriter("utf-8")(out)
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(headers)
    count = 0
    for row in rows:
        writer.writerow([_csv_cell(value) for value in row])
        count += 1
    return count


def write_xlsx(title: str, headers: list[str], rows: Iterator[list[Any]], out: IO[bytes]) -> int:
    """Write the XLSX (openpyxl's write-only workbook: rows go to disk as they come) to ``out``;
    how many rows."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    book = Workbook(write_only=True)
    sheet = book.create_sheet(title)
    sheet.append(headers)
    count = 0
    for row in rows:
        cells: list[Any] = []
        for value in row:
            if isinstance(value, str) and value.startswith("="):
                # openpyxl stores a string starting with "=" as a formula; this one is text.
                cell = WriteOnlyCell(sheet, value=value)
                cell.data_type = "s"
                cells.append(cell)
            else:
                cells.append(value)
        sheet.append(cells)
        count += 1
    book.save(out)
    return count


def write_sheet(session: Session, sheet: Sheet[Row], stmt: Select[Row], fmt: str, out: IO[bytes]) -> int:
    """Write what ``stmt`` selects as ``sheet`` in ``fmt`` (csv or xlsx) to ``out``; how many rows."""
    if fmt == "csv":
        return write_csv(sheet.headers, sheet_rows(session, sheet, stmt), out)
    if fmt == "xlsx":
        return write_xlsx(sheet.title, sheet.headers, sheet_rows(session, sheet, stmt), out)
    raise ValueError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")


def write(session: Session, f: queries.LeadFilter, fmt: str, out: IO[bytes]) -> int:
    """Write the leads export in ``fmt`` (csv or xlsx); how many rows."""
    return write_sheet(session, LEADS, queries.select_leads(f), fmt, out)


def described(f: queries.LeadFilter) -> dict[str, Any]:
    """The filters of an export as the audit log keeps them: only those set, as JSON values."""
    out: dict[str, Any] = {}
    for name in (
        "status",
        "owner_userid",
        "source",
        "channel_id",
        "grade",
        "q",
        "created_from",
        "created_to",
        "pool",
    ):
        value = getattr(f, name)
        if value is None or value == "":
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, StrEnum):
            value = value.value
        out[name] = value
    if f.statuses is not None:
        out["statuses"] = sorted(str(s) for s in f.statuses)
    out["sort"] = f.sort
    out["scope"] = "all" if f.visible is None else sorted(f.visible)
    return out


def record_export(session: Session, *, actor: str, f: queries.LeadFilter, fmt: str, count: int) -> AuditEntry:
    """The audit row of one leads export: who, the filters (and whose leads they could see), how
    many."""
    return record_list_export(
        session, actor=actor, target="leads", filters=described(f), fmt=fmt, count=count
    )


def record_list_export(
    session: Session, *, actor: str, target: str, filters: dict[str, Any], fmt: str, count: int
) -> AuditEntry:
    """The audit row of one export of the ``target`` list (leads, customers): who, the filters as
    JSON values (with ``scope``: whose rows the user could see, "all" for everyone), how many."""
    return record(
        session, actor=actor, action="export", target=target, count=count, format=fmt, filters=filters
    )
