"""Importing leads from CSV and XLSX files: reading the file (CSV in UTF-8, UTF-8 with a BOM or
GBK, as Chinese Excel saves it; XLSX's first sheet), mapping its columns to lead fields (guessed
from common Chinese and English headers, overridable), previewing the first rows with their
errors, and running an import.

An import validates every row with the one lead validation (``parse_lead``); a bad row is reported
(its row number as in the file, the column, the reason) and skipped. Good rows are deduped in
memory against the live leads and against the earlier rows of the same file, then merged into the
lead they duplicate, flagged as its likely duplicate, or skipped (``on_duplicate``). Every lead of
one import is written in ONE transaction, in chunks (ids taken up front; one executemany per chunk
on SQLite, psycopg's COPY on PostgreSQL: ``insert_leads``), together with the import's final
counts and its audit row: a crash leaves none of its leads behind, and the import is marked
failed with the reason.

``run_import`` opens its own units of work (claim, the import, the outcome) rather than taking
the edge's session, unlike the services: an import is a long job whose claim and failure must
commit apart from its leads, and its three callers (the CLI, the console for small files, the
imports tick) would each repeat that sequence.

Progress: on PostgreSQL each chunk's progress is written to the import's row from a separate
connection in its own short transaction (read committed: the console sees it while the import's
transaction is still open). On SQLite the import's transaction holds the one writer, so any other
write would wait for the import to finish; there progress is kept in memory, reported through the
``progress`` callback (the CLI's bar) and written with the import's result.

Imported leads with an owner (``--owner``, or the file's ``owner_userid`` column) are assigned to
them with an ownership history row each (written in bulk); leads without one stay in the public
pool. Assignment rules do not route imported leads (yet).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Engine, Table, func, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from scrm.audit import service as audit
from scrm.db import read, transaction
from scrm.directory.models import Staff
from scrm.errors import Conflict, InvalidInput, NotFound, ScrmError
from scrm.leads import dedupe
from scrm.leads.dedupe import Keys, Match
from scrm.leads.fields import LEAD_FIELDS, LeadInput, parse_lead
from scrm.leads.models import (
    ImportStatus,
    Lead,
    LeadDuplicate,
    LeadImport,
    LeadStatus,
    OwnershipChange,
    OwnershipReason,
)
from scrm.leads.service import build_lead, enrich
from scrm.timeutil import utcnow

log = logging.getLogger(__name__)

CHUNK_ROWS = 1_000
# Imports of more rows than this, started from the console, run in the background (jobs.imports).
BACKGROUND_ROWS = 5_000
# The import's row keeps this many row errors; the CLI's --errors-csv has them all.
STORED_ERRORS = 1_000
# A running import not finished this long after it was created has crashed (its process died).
RUNNING_LEASE = timedelta(hours=2)
MAX_FILE_BYTES = 50 * 1024 * 1024
# Stand-in ids in the dedupe index for new leads not flushed yet (far above any real id).
TEMP_ID_BASE = 1 << 62


class ImportFailed(ScrmError):
    """The import stopped part-way; none of its leads were kept (the reason is on its row)."""

    code = "import_failed"
    http_status = 500


class OnDuplicate(StrEnum):
    MERGE = "merge"  # fill the known lead's blank fields from the row
    FLAG = "flag"  # insert the row as a lead pointing at the one it may duplicate, for review
    SKIP = "skip"  # keep the known lead as it is


# --- reading ------------------------------------------------------------------------------------


@dataclass
class Sheet:
    """A file's header row and data rows; ``rows`` are (row number as in the file, cells)."""

    filename: str
    encoding: str  # utf-8, utf-8-sig, gbk, or xlsx
    headers: list[str]
    rows: list[tuple[int, list[str]]]


def read_sheet(path: str | Path, data: bytes | None = None) -> Sheet:
    """Read a .csv or .xlsx file (``data``: its bytes, when they are not on disk)."""
    name = Path(path).name
    suffix = Path(path).suffix.lower()
    if data is None:
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise InvalidInput(f"cannot read {path}: {error.strerror}", field="file") from None
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInput(
            f"{name} is larger than {MAX_FILE_BYTES // 1024 // 1024} MB; split it", field="file"
        )
    if suffix == ".csv":
        encoding, text = _decode(data)
        table: Iterable[Sequence[Any]] = csv.reader(io.StringIO(text, newline=""))
    elif suffix == ".xlsx":
        encoding, table = "xlsx", _xlsx_rows(data, name)
    else:
        raise InvalidInput(f"{name}: import a .csv or .xlsx file", field="file")
    numbered = iter(enumerate(table, start=1))
    headers: list[str] = []
    for _, first in numbered:  # the header is the first row with anything in it
        headers = [_cell(c) for c in first]
        if any(headers):
            break
    if not any(headers):
        raise InvalidInput(f"{name} has no header row", field="file")
    rows: list[tuple[int, list[str]]] = []
    for number, raw in numbered:
        cells = [_cell(c) for c in raw]
        if any(cells):  # a blank line is no row to report
            rows.append((number, cells))
    return Sheet(name, encoding, headers, rows)


def _decode(data: bytes) -> tuple[str, str]:
    """UTF-8 (with or without Excel's BOM), else GBK: what Chinese Excel saves "CSV" as. GB18030
    decodes every GBK file and the few characters GBK lacks."""
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig", data[3:].decode("utf-8", errors="strict")
    try:
        return "utf-8", data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return "gbk", data.decode("gb18030")
    except UnicodeDecodeError:
        raise InvalidInput(
            "the file is neither UTF-8 nor GBK text; save it as CSV UTF-8 or as .xlsx", field="file"
        ) from None


def _xlsx_rows(data: bytes, name: str) -> Iterator[tuple[Any, ...]]:
    import zipfile

    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as error:
        raise InvalidInput(f"{name} is not a readable .xlsx file ({error})", field="file") from None
    try:
        if not book.worksheets:
            return
        yield from book.worksheets[0].iter_rows(values_only=True)
    finally:
        book.close()


def _cell(value: Any) -> str:
    """A cell as text. Excel keeps a phone typed as a number as an int (or a float); a date as a
    datetime."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value).strip()


# --- the column map -----------------------------------------------------------------------------

# Lead field → headers that mean it (compared with case, spaces, underscores and colons folded).
HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "name": (
        "姓名",
        "名字",
        "联系人",
        "客户姓名",
        "联系人姓名",
        "name",
        "fullname",
        "contactname",
        "contact",
    ),
    "phone": (
        "手机",
        "手机号",
        "手机号码",
        "电话",
        "联系电话",
        "电话号码",
        "联系方式",
        "phone",
        "mobile",
        "tel",
        "telephone",
        "cell",
        "phonenumber",
        "mobilephone",
    ),
    "email": ("邮箱", "电子邮箱", "电子邮件", "邮件", "email", "e-mail", "mail", "emailaddress"),
    "company": (
        "公司",
        "公司名称",
        "企业",
        "企业名称",
        "单位",
        "客户名称",
        "company",
        "companyname",
        "organization",
    ),
    "title": ("职位", "职务", "头衔", "title", "jobtitle", "position"),
    "region": ("地区", "区域", "城市", "省份", "所在地", "所在地区", "region", "city", "area", "province"),
    "industry": ("行业", "所属行业", "industry"),
    "source": ("来源", "线索来源", "source", "leadsource"),
    "notes": ("备注", "说明", "描述", "notes", "note", "remark", "remarks", "comment", "comments"),
    "external_ref": ("外部编号", "外部id", "externalref", "externalid"),
    "owner_userid": ("负责人账号", "owneruserid"),
    **{f"utm_{part}": (f"utm{part}",) for part in ("source", "medium", "campaign", "content", "term")},
}


def _fold_header(header: str) -> str:
    return re.sub(r"[\s_:：()（）*]", "", header).lower()


def guess_column_map(headers: Sequence[str]) -> dict[str, str]:
    """Lead field → the file's header for it, for the headers we recognise."""
    by_alias = {alias: name for name, aliases in HEADER_ALIASES.items() for alias in aliases}
    guessed: dict[str, str] = {}
    for header in headers:
        name = by_alias.get(_fold_header(header))
        if name and name not in guessed:
            guessed[name] = header
    return guessed


def resolve_column_map(headers: Sequence[str], overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The guessed map with ``overrides`` (field → header; an empty header unmaps the field)."""
    column_map = guess_column_map(headers)
    for name, header in (overrides or {}).items():
        if name not in LEAD_FIELDS:
            raise InvalidInput(
                f"{name!r} is not a lead field; choose from {', '.join(LEAD_FIELDS)}", field="column_map"
            )
        if not header:
            column_map.pop(name, None)
        elif header not in headers:
            raise InvalidInput(
                f"the file has no column {header!r} (its columns: {', '.join(h for h in headers if h)})",
                field="column_map",
            )
        else:
            column_map[name] = header
    if not column_map:
        raise InvalidInput(
            "no column of the file is a lead field; map one, e.g. name=姓名 or phone=手机", field="column_map"
        )
    return column_map


# --- rows ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    row: int  # as in the file: the header is row 1 (in a file that starts with it)
    column: str  # the file's header, or the lead field when no column holds it
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "reason": self.reason}


class _Rows:
    """Turns a sheet's cells into raw lead values through the column map."""

    def __init__(self, sheet: Sheet, column_map: dict[str, str]) -> None:
        self.column_map = column_map
        self.indexes = {name: sheet.headers.index(header) for name, header in column_map.items()}

    def raw(self, cells: list[str]) -> dict[str, str | None]:
        return {name: (cells[i] or None) if i < len(cells) else None for name, i in self.indexes.items()}

    def errors(self, row: int, error: InvalidInput) -> list[RowError]:
        fields = error.fields or {"": error.message}
        return [
            RowError(row, self.column_map.get(name, name), reason) for name, reason in sorted(fields.items())
        ]


@dataclass
class PreviewRow:
    row: int
    values: dict[str, str]  # lead field → the cell
    errors: list[RowError]


@dataclass
class Preview:
    filename: str
    encoding: str
    headers: list[str]
    column_map: dict[str, str]
    total_rows: int
    rows: list[PreviewRow]


def preview(sheet: Sheet, column_map: dict[str, str] | None = None, rows: int = 10) -> Preview:
    """The console's preview step: the headers, the map (guessed, with ``column_map`` on top) and
    the first ``rows`` rows with what is wrong in each."""
    resolved = resolve_column_map(sheet.headers, column_map)
    mapper = _Rows(sheet, resolved)
    shown: list[PreviewRow] = []
    for number, cells in sheet.rows[:rows]:
        raw = mapper.raw(cells)
        try:
            parse_lead(raw, default_source="import")
            problems: list[RowError] = []
        except InvalidInput as error:
            problems = mapper.errors(number, error)
        shown.append(PreviewRow(number, {k: v or "" for k, v in raw.items()}, problems))
    return Preview(sheet.filename, sheet.encoding, sheet.headers, resolved, len(sheet.rows), shown)


# --- creating and running an import -------------------------------------------------------------


def save_upload(directory: Path, filename: str, data: bytes) -> Path:
    """Keep an uploaded file where a background import can read it; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^\w.\-]", "_", Path(filename).name)[-120:] or "upload"
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
    path = directory / f"{stamp}-{safe}"
    path.write_bytes(data)
    return path


def create_import(
    session: Session,
    *,
    filename: str,
    column_map: dict[str, str],
    source: str = "import",
    owner_userid: str | None = None,
    on_duplicate: OnDuplicate | str = OnDuplicate.FLAG,
    created_by: str | None = None,
    total_rows: int = 0,
) -> LeadImport:
    """A pending import of the file at ``filename`` (the path it is read from)."""
    try:
        mode = OnDuplicate(on_duplicate)
    except ValueError:
        raise InvalidInput("on_duplicate is one of merge, flag, skip", field="on_duplicate") from None
    if not source or len(source) > 32:
        raise InvalidInput("the source is 1 to 32 characters, e.g. import or expo-2026", field="source")
    if owner_userid and not _staff_userids(session, [owner_userid]):
        raise InvalidInput(f"no staff member {owner_userid!r}; give a WeCom userid", field="owner_userid")
    row = LeadImport(
        filename=filename[-256:],
        source=source,
        owner_userid=owner_userid or None,
        on_duplicate=mode.value,
        column_map=dict(column_map),
        status=ImportStatus.PENDING,
        total_rows=total_rows,
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return row


@dataclass
class ImportReport:
    total_rows: int = 0
    processed_rows: int = 0
    created: int = 0
    merged: int = 0
    flagged: int = 0
    skipped: int = 0
    errors: list[RowError] = field(default_factory=list)
    encoding: str = ""
    status: ImportStatus = ImportStatus.RUNNING
    failure: str = ""
    import_id: int | None = None

    @property
    def error_count(self) -> int:
        return len(self.errors)


Progress = Callable[[ImportReport], None]


def run_import(
    factory: sessionmaker[Session],
    import_id: int,
    *,
    sheet: Sheet | None = None,
    progress: Progress | None = None,
    chunk_rows: int = CHUNK_ROWS,
    now: datetime | None = None,
) -> ImportReport:
    """Run a pending import: claim it (pending → running), write its leads in one transaction,
    finish it done or failed. ``sheet``: the file already read (else it is read from the import's
    filename). A failure leaves no lead of the import behind, marks it failed with the reason and
    raises ImportFailed. Raises Conflict when the import is not pending (another runner has it)."""
    now = now or utcnow()
    with transaction(factory) as session:
        claimed = _rowcount(
            session.execute(
                update(LeadImport)
                .where(LeadImport.id == import_id, LeadImport.status == ImportStatus.PENDING)
                .values(status=ImportStatus.RUNNING, started_at=now)
            )
        )
        job = session.get(LeadImport, import_id)
        if job is None:
            raise NotFound(f"no lead import {import_id}")
        if not claimed:
            raise Conflict(f"lead import {import_id} is {job.status.value}, not pending")
    report = ImportReport(import_id=import_id)
    try:
        if sheet is None:
            sheet = read_sheet(job.filename)
        report.total_rows, report.encoding = len(sheet.rows), sheet.encoding
        engine = factory.kw.get("bind")
        write_progress = (
            _progress_writer(engine, import_id)
            if isinstance(engine, Engine) and _is_postgresql(engine)
            else None
        )

        def tell(r: ImportReport) -> None:
            if write_progress is not None:
                write_progress(r)
            if progress is not None:
                progress(r)

        with transaction(factory) as session:
            job = session.get_one(LeadImport, import_id)
            _Importer(session, job, sheet, now=now, chunk_rows=chunk_rows, progress=tell).run(report)
            report.status = ImportStatus.DONE
            _finish(job, report, now)
            audit.record(
                session,
                actor=job.created_by or "cli",
                action="import",
                target=f"lead_import:{import_id}",
                count=report.created,
                filename=sheet.filename,
                merged=report.merged,
                flagged=report.flagged,
                skipped=report.skipped,
                errors=report.error_count,
            )
    except BaseException as error:
        report.status = ImportStatus.FAILED
        report.failure = _describe(error)
        log.warning("lead import %s failed: %s", import_id, report.failure)
        _mark_failed(factory, import_id, report, now)
        if isinstance(error, Exception):
            raise ImportFailed(f"the import stopped and wrote no leads: {report.failure}") from error
        raise
    return report


def dry_run(
    factory: sessionmaker[Session],
    sheet: Sheet,
    *,
    column_map: dict[str, str],
    source: str = "import",
    owner_userid: str | None = None,
    on_duplicate: OnDuplicate | str = OnDuplicate.FLAG,
    progress: Progress | None = None,
) -> ImportReport:
    """Validate and dedupe ``sheet`` as an import would, writing nothing: what it would create,
    merge, flag and skip, and its row errors."""
    job = LeadImport(  # never added to a session
        id=0,
        filename=sheet.filename,
        source=source,
        owner_userid=owner_userid,
        on_duplicate=OnDuplicate(on_duplicate).value,
        column_map=dict(column_map),
    )
    report = ImportReport(total_rows=len(sheet.rows), encoding=sheet.encoding)
    with read(factory) as session:
        _Importer(session, job, sheet, now=utcnow(), progress=progress, write=False).run(report)
    report.status = ImportStatus.DONE
    return report


def fail_stale_imports(
    session: Session, *, now: datetime | None = None, lease: timedelta = RUNNING_LEASE
) -> int:
    """Mark failed the running imports whose process died: started more than ``lease`` ago and
    still running (their transaction rolled back with the process, so they left no leads)."""
    now = now or utcnow()
    return _rowcount(
        session.execute(
            update(LeadImport)
            .where(LeadImport.status == ImportStatus.RUNNING, LeadImport.started_at < now - lease)
            .values(
                status=ImportStatus.FAILED,
                failure="the import stopped (its process ended); run it again",
                finished_at=now,
            )
        )
    )


def pending_imports(session: Session, limit: int = 10) -> list[int]:
    return list(
        session.scalars(
            select(LeadImport.id)
            .where(LeadImport.status == ImportStatus.PENDING)
            .order_by(LeadImport.id)
            .limit(limit)
        )
    )


# --- the import itself --------------------------------------------------------------------------


@dataclass
class _Flag:
    lead: Lead
    target: int  # an index id: a lead's id, or the stand-in id of a lead of this import
    match: Match


class _Importer:
    """One pass over a sheet inside the caller's transaction (or, with ``write`` False, a read
    session it never writes in)."""

    def __init__(
        self,
        session: Session,
        job: LeadImport,
        sheet: Sheet,
        *,
        now: datetime,
        chunk_rows: int = CHUNK_ROWS,
        progress: Progress | None = None,
        write: bool = True,
    ) -> None:
        self.session, self.job, self.sheet, self.now = session, job, sheet, now
        self.chunk_rows, self.progress, self.write = max(chunk_rows, 1), progress, write
        self.mode = OnDuplicate(job.on_duplicate)
        self.rows = _Rows(sheet, resolve_column_map(sheet.headers, job.column_map))
        self.index = dedupe.DedupeIndex.load(session)
        # (source, external_ref) → index id: the pair is unique among leads, so a known pair is
        # the same record imported again.
        self.refs: dict[tuple[str, str], int] = {
            (source, ref or ""): lead_id
            for lead_id, source, ref in session.execute(
                select(Lead.id, Lead.source, Lead.external_ref).where(Lead.external_ref.is_not(None))
            )
        }
        # A new lead is known to the index by a stand-in id until its chunk is flushed; stand-ins
        # are above every real id, so the index's "oldest first" puts known leads first, then
        # this file's rows in order.
        self.temp_ids = itertools.count(TEMP_ID_BASE)
        self.pending: dict[int, Lead] = {}  # this chunk's new leads by their stand-in id
        self.resolved: dict[int, int] = {}  # stand-in id → the lead's id, once flushed
        self.new: list[Lead] = []
        self.flags: list[_Flag] = []
        self.staff: set[str] = set()
        owners = {job.owner_userid} if job.owner_userid else set()
        if "owner_userid" in self.rows.column_map:
            i = self.rows.indexes["owner_userid"]
            owners |= {cells[i] for _, cells in sheet.rows if i < len(cells) and cells[i]}
        self.staff = _staff_userids(session, sorted(owners)) if owners else set()

    def run(self, report: ImportReport) -> None:
        """Every row, flushing (and reporting progress) each ``chunk_rows`` rows."""
        for number, cells in self.sheet.rows:
            self.row(report, number, cells)
            report.processed_rows += 1
            if report.processed_rows % self.chunk_rows == 0:
                self.flush()
                if self.progress is not None:
                    self.progress(report)
        self.flush()
        if self.progress is not None:
            self.progress(report)

    def row(self, report: ImportReport, number: int, cells: list[str]) -> None:
        raw = self.rows.raw(cells)
        try:
            data = parse_lead(raw, default_source=self.job.source)
        except InvalidInput as error:
            report.errors.extend(self.rows.errors(number, error))
            return
        owner = self.job.owner_userid or data.owner_userid
        if owner and owner not in self.staff:
            column = self.rows.column_map.get("owner_userid", "owner_userid")
            report.errors.append(RowError(number, column, f"no staff member {owner!r}"))
            return
        # Built for every good row (its keys come from it: the company key is computed once).
        lead = self._lead(data, owner)
        keys = Keys.of_lead(lead)
        ref = (data.source, data.external_ref) if data.external_ref else None
        match: Match | None = None
        if ref is not None and ref in self.refs:
            match = Match(self.refs[ref], "external_ref", 1.0, "same source and external_ref", True)
        else:
            found = self.index.match(keys, limit=3)
            match = next((m for m in found if m.exact), found[0] if found else None)
        if match is None:
            self.create(lead, keys, ref)
            report.created += 1
        elif match.exact and self.mode is OnDuplicate.MERGE:
            self.merge(match.lead_id, data, keys)
            report.merged += 1
        elif (match.exact and self.mode is OnDuplicate.SKIP) or match.rule == "external_ref":
            # A known (source, external_ref) cannot be inserted again (it is unique): skipped.
            report.skipped += 1
        else:  # flagged, or a fuzzy match (always for review)
            self.flag(match, lead)
            report.flagged += 1

    def _lead(self, data: LeadInput, owner: str | None) -> Lead:
        return build_lead(
            data,
            import_id=self.job.id or None,
            owner_userid=owner,
            status=LeadStatus.ASSIGNED if owner else LeadStatus.NEW,
            assigned_at=self.now if owner else None,
            duplicate_of_id=None,
            created_at=self.now,
        )

    def create(self, lead: Lead, keys: Keys, ref: tuple[str, str] | None) -> None:
        temp = next(self.temp_ids)
        self.index.add(temp, keys)
        if ref is not None:
            self.refs[ref] = temp
        if self.write:
            self.pending[temp] = lead
            self.new.append(lead)

    def merge(self, target: int, data: LeadInput, keys: Keys) -> None:
        # The duplicate's keys lead to the survivor from now on (e.g. its email).
        self.index.add(target, keys)
        if not self.write:
            return
        lead = self.pending.get(target) or self.session.get(Lead, self.resolved.get(target, target))
        if lead is not None:
            enrich(lead, data)

    def flag(self, match: Match, lead: Lead) -> None:
        if self.write:
            self.flags.append(_Flag(lead, match.lead_id, match))

    def _target_id(self, target: int) -> int | None:
        if target < TEMP_ID_BASE:
            return target
        return self.resolved.get(target)

    def flush(self) -> None:
        """Write this chunk: its new leads, then the flagged rows (whose lead may be one of the new
        ones), then the flag pairs and ownership history that need the leads' ids."""
        self.session.flush()  # the merges into known leads
        if not self.write or not (self.new or self.flags):
            return
        ready = [f for f in self.flags if self._target_id(f.target) is not None]
        waiting = [f for f in self.flags if self._target_id(f.target) is None]
        for f in ready:
            f.lead.duplicate_of_id = self._target_id(f.target)
        insert_leads(self.session, [*self.new, *(f.lead for f in ready)])
        for temp, lead in self.pending.items():
            self.resolved[temp] = lead.id
        if waiting:
            for f in waiting:
                f.lead.duplicate_of_id = self._target_id(f.target)
            insert_leads(self.session, [f.lead for f in waiting])
        # Rows nothing reads back: plain executemany INSERTs.
        pairs = [
            {
                "lead_id": f.lead.id,
                "other_lead_id": f.lead.duplicate_of_id,
                "rule": f.match.rule,
                "score": f.match.score,
                "reason": f.match.reason[:256],
                "created_at": self.now,
            }
            for f in self.flags
        ]
        if pairs:
            self.session.execute(insert(_table(LeadDuplicate)), pairs)
        history = [
            {
                "lead_id": lead.id,
                "from_userid": None,
                "to_userid": lead.owner_userid,
                "reason": OwnershipReason.CREATED,
                "note": "import",
                "actor": self.job.created_by,
                "at": self.now,
            }
            for lead in itertools.chain(self.new, (f.lead for f in self.flags))
            if lead.owner_userid
        ]
        if history:
            self.session.execute(insert(_table(OwnershipChange)), history)
        self.pending.clear()
        self.new.clear()
        self.flags.clear()


# --- helpers ------------------------------------------------------------------------------------


def insert_leads(session: Session, leads: Sequence[Lead]) -> None:
    """Insert new leads (built by ``build_lead``, never added to the session) in one executemany,
    and set each one's ``id``.

    Not ``add_all`` + flush: the unit of work reads each new row's id back with RETURNING in
    parameter order, which SQLAlchemy cannot batch on SQLite (no implicit insert sentinel: one
    INSERT per row, measured at 5,000 statements for 5,000 leads), and on PostgreSQL batches as
    one multi-row VALUES statement per 1,000 rows that psycopg re-parses each time (a fifth of a
    millisecond per row). So the ids are taken first and given explicitly: on PostgreSQL from the
    table's own sequence, n values in one round trip; on SQLite the ones after the table's
    highest, which are free because the import's transaction holds the one writer (BEGIN
    IMMEDIATE). Every row carries the same columns (those ``build_lead`` and the import set); the
    rest take their column defaults."""
    if not leads:
        return
    now = utcnow()
    rows = [{key: getattr(lead, key) for key in LEAD_INSERT_COLUMNS} for lead in leads]
    if session.get_bind().dialect.name == "postgresql":
        ids = [int(i) for i in session.scalars(_NEXT_LEAD_IDS, {"n": len(rows)})]
    else:
        first = int(session.scalar(select(func.max(Lead.id))) or 0) + 1
        ids = list(range(first, first + len(rows)))
    for row, lead_id in zip(rows, ids, strict=True):
        row["id"] = lead_id
        # what the model's defaults would have given a Lead built without them
        row["status"] = row["status"] or LeadStatus.NEW
        row["created_at"] = row["created_at"] or now
    if session.get_bind().dialect.name == "postgresql":
        _copy_rows(session, _table(Lead), rows, now)
    else:
        session.execute(insert(_table(Lead)), rows)
    for lead, lead_id in zip(leads, ids, strict=True):
        lead.id = lead_id


def _copy_rows(session: Session, table: Table, rows: list[dict[str, Any]], now: datetime) -> None:
    """PostgreSQL's bulk load (COPY … FROM STDIN through psycopg, on the session's connection and
    in its transaction): measured at 100k leads, executemany took 50 s on two shared cores.
    COPY applies no Python-side column defaults, so every column is given: the row's value, else
    the model's default."""
    defaults: dict[str, Any] = {}
    for column in table.columns:
        default = column.default
        if column.key in rows[0] or default is None:
            defaults[column.key] = None
        elif getattr(default, "is_scalar", False):
            defaults[column.key] = getattr(default, "arg", None)
        else:  # a factory (utcnow, dict): now for the times, a fresh value otherwise
            factory: Any = default
            made = factory.arg(None)
            defaults[column.key] = now if isinstance(made, datetime) else made
    names = [column.key for column in table.columns]

    def value(v: Any) -> Any:
        if isinstance(v, StrEnum):
            return v.value
        if isinstance(v, dict | list):
            return json.dumps(v, ensure_ascii=False)
        return v

    driver = session.connection().connection.driver_connection
    assert driver is not None
    with (
        driver.cursor() as cursor,
        cursor.copy(
            f"COPY {table.name} ({', '.join(names)}) FROM STDIN"  # noqa: S608 - the model's own names
        ) as copy,
    ):
        for row in rows:
            copy.write_row([value(row[n]) if n in row else value(defaults[n]) for n in names])


_NEXT_LEAD_IDS = text("SELECT nextval(pg_get_serial_sequence('leads', 'id')) FROM generate_series(1, :n)")

# What build_lead and an import set on a new lead: every inserted row names all of them.
LEAD_INSERT_COLUMNS = (
    "name",
    "phone_e164",
    "email",
    "unionid",
    "company",
    "company_key",
    "title",
    "region",
    "industry",
    "source",
    "external_ref",
    "owner_userid",
    "notes",
    "utm",
    "channel_id",
    "import_id",
    "status",
    "assigned_at",
    "duplicate_of_id",
    "created_at",
)


def _table(model: type[Any]) -> Table:
    return cast(Table, model.__table__)


def _staff_userids(session: Session, userids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(userids), 500):
        chunk = list(userids[start : start + 500])
        found |= set(session.scalars(select(Staff.userid).where(Staff.userid.in_(chunk))))
    return found


def _finish(job: LeadImport, report: ImportReport, now: datetime) -> None:
    job.status = report.status
    job.total_rows = report.total_rows
    job.processed_rows = report.processed_rows
    job.created_count = report.created
    job.merged_count = report.merged
    job.flagged_count = report.flagged
    job.skipped_count = report.skipped
    job.error_count = report.error_count
    job.errors = [e.as_dict() for e in report.errors[:STORED_ERRORS]]
    job.failure = report.failure
    job.finished_at = now


def _mark_failed(factory: sessionmaker[Session], import_id: int, report: ImportReport, now: datetime) -> None:
    try:
        with transaction(factory) as session:
            job = session.get(LeadImport, import_id)
            if job is not None:
                _finish(job, report, now)
                # What was counted was rolled back: nothing of it was kept.
                job.created_count = job.merged_count = job.flagged_count = job.skipped_count = 0
    except Exception:  # noqa: BLE001 - the import's own failure is what the caller must see
        log.exception("could not mark lead import %s failed", import_id)


def _describe(error: BaseException) -> str:
    if isinstance(error, ScrmError):
        return error.message
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return f"{type(error).__name__}: {error}"[:2000]


def _is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def _rowcount(result: Any) -> int:
    # An UPDATE's result is a CursorResult, which counts the rows it matched.
    return int(result.rowcount)


def _progress_writer(engine: Engine, import_id: int) -> Progress:
    """Progress in a short transaction of its own on another connection (PostgreSQL only: read
    committed, so the console sees it while the import's transaction is open)."""

    def write(report: ImportReport) -> None:
        try:
            with engine.begin() as conn:
                conn.execute(
                    update(LeadImport)
                    .where(LeadImport.id == import_id)
                    .values(
                        total_rows=report.total_rows,
                        processed_rows=report.processed_rows,
                        error_count=report.error_count,
                    )
                )
        except Exception:  # noqa: BLE001 - progress is a courtesy; the import goes on
            log.warning("could not write progress of lead import %s", import_id, exc_info=True)

    return write
