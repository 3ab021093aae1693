"""Importing leads from CSV and XLSX: reading (BOM, GBK, XLSX), the column map, the preview, row
errors, dedupe within the file and against known leads, owners, one transaction per import (a
crash leaves nothing), dry runs, the background tick and the CLI."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from openpyxl import Workbook
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scrm.audit.models import AuditEntry
from scrm.db import make_engine, make_session_factory, transaction
from scrm.errors import Conflict, InvalidInput
from scrm.leads import importing
from scrm.leads.fields import parse_lead
from scrm.leads.importing import OnDuplicate
from scrm.leads.models import (
    ImportStatus,
    Lead,
    LeadDuplicate,
    LeadImport,
    LeadStatus,
    OwnershipChange,
    OwnershipReason,
)
from scrm.leads.service import build_lead
from tests import factories

HEADERS = ["姓名", "手机", "邮箱", "公司", "职位", "地区", "备注"]


@pytest.fixture
def factory(clean_db: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(clean_db)
    yield make_session_factory(engine)
    engine.dispose()


def csv_bytes(rows: list[list[str]], headers: list[str] = HEADERS, encoding: str = "utf-8") -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(headers)
    writer.writerows(rows)
    return out.getvalue().encode(encoding)


def person(i: int) -> list[str]:
    return [f"客户{i}", f"139{i:08d}", f"c{i}@example.com", f"公司{i}", "经理", "上海", ""]


def start(
    factory: sessionmaker[Session], sheet: importing.Sheet, **options: Any
) -> tuple[int, importing.ImportReport]:
    column_map = importing.resolve_column_map(sheet.headers, options.pop("column_map", None))
    chunk_rows = options.pop("chunk_rows", importing.CHUNK_ROWS)
    progress = options.pop("progress", None)
    with transaction(factory) as session:
        import_id = importing.create_import(
            session, filename=sheet.filename, column_map=column_map, total_rows=len(sheet.rows), **options
        ).id
    report = importing.run_import(factory, import_id, sheet=sheet, chunk_rows=chunk_rows, progress=progress)
    return import_id, report


def existing(factory: sessionmaker[Session], **values: str) -> int:
    with transaction(factory) as session:
        lead = build_lead(parse_lead(values, default_source="api"))
        session.add(lead)
        session.flush()
        return lead.id


def count(factory: sessionmaker[Session], model: Any, *where: Any) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


# --- reading and mapping ------------------------------------------------------------------------


def test_csv_in_utf8_with_a_bom_and_in_gbk_is_read_and_its_encoding_named():
    rows = [["张三", "13800138000", "zs@example.com", "上海某某有限公司", "经理", "上海", "展会"]]
    bom = importing.read_sheet("a.csv", b"\xef\xbb\xbf" + csv_bytes(rows))
    gbk = importing.read_sheet("b.csv", csv_bytes(rows, encoding="gbk"))
    plain = importing.read_sheet("c.csv", csv_bytes(rows))
    assert (bom.encoding, gbk.encoding, plain.encoding) == ("utf-8-sig", "gbk", "utf-8")
    for sheet in (bom, gbk, plain):
        assert sheet.headers == HEADERS  # the BOM is not part of the first header
        assert sheet.rows == [(2, rows[0])]


def test_headers_are_guessed_in_chinese_and_english_and_overridable():
    guessed = importing.guess_column_map(
        [
            "姓名",
            "手机号",
            "E-mail",
            "Company Name",
            "职务",
            "城市",
            "行业",
            "来源",
            "备注",
            "utm_source",
            "其他",
        ]
    )
    assert guessed == {
        "name": "姓名",
        "phone": "手机号",
        "email": "E-mail",
        "company": "Company Name",
        "title": "职务",
        "region": "城市",
        "industry": "行业",
        "source": "来源",
        "notes": "备注",
        "utm_source": "utm_source",
    }
    headers = ["联系人", "电话", "备用电话"]
    assert importing.resolve_column_map(headers, {"phone": "备用电话", "name": ""}) == {"phone": "备用电话"}
    with pytest.raises(InvalidInput, match="no column '手机'"):
        importing.resolve_column_map(headers, {"phone": "手机"})
    with pytest.raises(InvalidInput, match="not a lead field"):
        importing.resolve_column_map(headers, {"age": "电话"})
    with pytest.raises(InvalidInput, match="no column of the file"):
        importing.resolve_column_map(["a", "b"])


def test_other_files_are_refused():
    with pytest.raises(InvalidInput, match=".csv or .xlsx"):
        importing.read_sheet("leads.txt", b"x")
    with pytest.raises(InvalidInput, match="not a readable .xlsx"):
        importing.read_sheet("leads.xlsx", b"not a zip")


def test_preview_shows_the_map_and_the_first_rows_with_their_errors():
    rows = [person(1), ["李四", "12345", "bad-email", "", "", "", ""], ["", "", "", "", "", "", "只有备注"]]
    shown = importing.preview(importing.read_sheet("p.csv", csv_bytes(rows)), rows=10)
    assert shown.total_rows == 3 and shown.column_map["phone"] == "手机"
    assert [r.row for r in shown.rows] == [2, 3, 4]
    assert shown.rows[0].errors == []
    assert {(e.column, e.reason.split(" (")[0]) for e in shown.rows[1].errors} == {
        ("手机", "not a valid phone number"),
        ("邮箱", "not a valid email address"),
    }
    assert shown.rows[2].errors[0].column == "姓名" and "at least a name" in shown.rows[2].errors[0].reason


# --- running an import --------------------------------------------------------------------------


def xlsx_bytes(rows: list[list[Any]]) -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HEADERS)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_xlsx_of_200_leads_with_10_bad_rows_creates_190_and_reports_10(factory):
    rows: list[list[Any]] = [person(i) for i in range(200)]
    rows[0][1] = 13900000000  # Excel keeps a phone typed as a number as a number
    bad = {5: (1, "手机", "123"), 17: (2, "邮箱", "not-an-email")}
    for i in range(10):
        n = 10 + i * 19
        which, _, value = bad[5] if i % 2 else bad[17]
        rows[n][which] = value
    data = xlsx_bytes(rows)
    sheet = importing.read_sheet("leads.xlsx", data)
    assert sheet.encoding == "xlsx" and len(sheet.rows) == 200
    import_id, report = start(factory, sheet, source="expo", chunk_rows=64)
    assert (report.created, report.error_count, report.status) == (190, 10, ImportStatus.DONE)
    expected_rows = [10 + i * 19 + 2 for i in range(10)]  # +1 for the header, +1 counting from 1
    assert [e.row for e in report.errors] == expected_rows
    assert {e.column for e in report.errors} == {"手机", "邮箱"}
    assert all(e.reason for e in report.errors)
    with factory() as session:
        job = session.get_one(LeadImport, import_id)
        assert (job.status, job.created_count, job.error_count, job.processed_rows) == (
            ImportStatus.DONE,
            190,
            10,
            200,
        )
        assert job.errors[0] == {"row": 12, "column": "邮箱", "reason": report.errors[0].reason}
        leads = session.scalars(select(Lead).where(Lead.import_id == import_id)).all()
        assert len(leads) == 190
        assert all(lead.source == "expo" and lead.owner_userid is None for lead in leads)
        assert all(lead.status is LeadStatus.NEW for lead in leads)  # in the pool
        assert any(lead.phone_e164 == "+8613900000000" for lead in leads)
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "import")).one()
        assert entry.count == 190 and entry.target == f"lead_import:{import_id}"


@pytest.mark.parametrize("mode", list(OnDuplicate))
def test_duplicates_within_the_file_and_of_known_leads(factory, mode):
    known = existing(factory, name="老客户", phone="13800138000")
    rows = [
        ["张三", "13800138000", "zs@example.com", "甲公司", "", "北京", "来自展会"],  # a known lead's phone
        ["李四", "13700137000", "", "乙公司", "", "", ""],
        ["李四", "", "ls@example.com", "", "总监", "", ""],  # new
        ["李四四", "+86 137-0013-7000", "", "", "", "上海", ""],  # row 3's phone, spelled otherwise
    ]
    import_id, report = start(factory, importing.read_sheet("d.csv", csv_bytes(rows)), on_duplicate=mode)
    with factory() as session:
        leads = session.scalars(select(Lead).where(Lead.import_id == import_id).order_by(Lead.id)).all()
        first = session.get_one(Lead, known)
        pairs = session.scalars(select(LeadDuplicate).order_by(LeadDuplicate.id)).all()
        if mode is OnDuplicate.MERGE:
            assert (report.created, report.merged) == (2, 2)
            assert [lead.name for lead in leads] == ["李四", "李四"]
            assert first.email == "zs@example.com" and first.region == "北京" and first.notes == "来自展会"
            assert first.name == "老客户"  # what was known stays
            assert leads[0].region == "上海"  # row 5 enriched row 3, written in the same import
            assert pairs == []
        elif mode is OnDuplicate.FLAG:
            assert (report.created, report.flagged) == (2, 2)
            assert len(leads) == 4
            by_name = {lead.name: lead for lead in leads}
            assert by_name["张三"].duplicate_of_id == known
            assert by_name["李四四"].duplicate_of_id == leads[0].id  # row 3: new leads are written first
            assert {(p.lead_id, p.other_lead_id, p.rule) for p in pairs} == {
                (by_name["张三"].id, known, "phone"),
                (by_name["李四四"].id, leads[0].id, "phone"),
            }
            assert first.email is None  # flagging changes nothing known
        else:
            assert (report.created, report.skipped) == (2, 2)
            assert [lead.name for lead in leads] == ["李四", "李四"]
            assert first.email is None and pairs == []


def test_a_flagged_row_of_a_lead_in_the_same_chunk_points_at_it(factory):
    rows = [person(1), person(2), person(1)]
    import_id, report = start(factory, importing.read_sheet("f.csv", csv_bytes(rows)), chunk_rows=1000)
    assert (report.created, report.flagged) == (2, 1)
    with factory() as session:
        leads = session.scalars(select(Lead).where(Lead.import_id == import_id).order_by(Lead.id)).all()
    assert leads[2].duplicate_of_id == leads[0].id


def test_a_known_external_ref_is_the_same_record_again(factory):
    headers = ["name", "phone", "external_ref"]
    first = [["A", "13800138001", "r1"], ["B", "13800138002", "r2"]]
    start(factory, importing.read_sheet("e.csv", csv_bytes(first, headers)), source="crm")
    again = [["A2", "13900139001", "r1"], ["C", "13800138003", "r3"], ["C", "", "r3"]]
    _, report = start(factory, importing.read_sheet("e.csv", csv_bytes(again, headers)), source="crm")
    assert (report.created, report.skipped, report.error_count) == (1, 2, 0)
    assert count(factory, Lead) == 3


def test_an_owner_gets_every_created_lead_with_its_history(factory):
    with transaction(factory) as session:
        factories.staff(session, "zhangsan")
    with transaction(factory) as session, pytest.raises(InvalidInput, match="no staff member"):
        importing.create_import(session, filename="x.csv", column_map={"name": "姓名"}, owner_userid="nobody")
    rows = [person(1), person(2), person(1)]
    import_id, report = start(
        factory, importing.read_sheet("o.csv", csv_bytes(rows)), owner_userid="zhangsan"
    )
    assert (report.created, report.flagged) == (2, 1)
    with factory() as session:
        leads = session.scalars(select(Lead).where(Lead.import_id == import_id)).all()
        assert all(lead.owner_userid == "zhangsan" and lead.status is LeadStatus.ASSIGNED for lead in leads)
        changes = session.scalars(select(OwnershipChange)).all()
    assert sorted(c.lead_id for c in changes if c.lead_id) == sorted(lead.id for lead in leads)
    assert {(c.reason, c.from_userid, c.to_userid) for c in changes} == {
        (OwnershipReason.CREATED, None, "zhangsan")
    }


def test_a_crash_mid_import_leaves_none_of_its_leads(factory):
    with transaction(factory) as session:
        factories.staff(session, "zhangsan")
    rows = [person(i) for i in range(100)] + [person(3)]

    def crash(report: importing.ImportReport) -> None:
        if report.processed_rows >= 60:
            raise RuntimeError("disk full")

    with pytest.raises(importing.ImportFailed, match="disk full"):
        start(
            factory,
            importing.read_sheet("c.csv", csv_bytes(rows)),
            owner_userid="zhangsan",
            chunk_rows=20,
            progress=crash,
        )
    with factory() as session:
        job = session.scalars(select(LeadImport)).one()
    assert job.status is ImportStatus.FAILED and "RuntimeError: disk full" in job.failure
    assert job.created_count == 0 and job.finished_at is not None
    assert count(factory, Lead, Lead.import_id == job.id) == 0
    assert count(factory, Lead) == count(factory, OwnershipChange) == count(factory, AuditEntry) == 0
    with pytest.raises(Conflict, match="failed, not pending"):
        importing.run_import(factory, job.id)


def test_progress_is_visible_while_the_import_runs_on_postgresql_only(factory):
    rows = [person(i) for i in range(50)]
    seen: list[tuple[int, int]] = []

    def look(report: importing.ImportReport) -> None:
        with factory() as session:  # another connection, as the console's poll
            stored = session.scalars(select(LeadImport.processed_rows)).one()
        seen.append((report.processed_rows, stored))

    import_id, _ = start(
        factory, importing.read_sheet("p.csv", csv_bytes(rows)), chunk_rows=20, progress=look
    )
    postgresql = factory.kw["bind"].dialect.name == "postgresql"
    # The import's own leads stay invisible until it commits; its progress does not (PostgreSQL).
    expected = [(20, 20), (40, 40), (50, 50)] if postgresql else [(20, 0), (40, 0), (50, 0)]
    assert seen == expected
    with factory() as session:
        assert session.get_one(LeadImport, import_id).processed_rows == 50


def test_a_dry_run_writes_nothing(factory):
    existing(factory, name="老客户", phone="13800138000")
    rows = [person(1), person(1), ["X", "13800138000", "", "", "", "", ""], ["Y", "1", "", "", "", "", ""]]
    sheet = importing.read_sheet("d.csv", csv_bytes(rows))
    column_map = importing.resolve_column_map(sheet.headers)
    report = importing.dry_run(factory, sheet, column_map=column_map, on_duplicate="merge")
    assert (report.created, report.merged, report.error_count) == (1, 2, 1)
    assert count(factory, Lead) == 1 and count(factory, LeadImport) == 0
    with factory() as session:
        assert session.scalars(select(Lead)).one().email is None


# --- the background tick ------------------------------------------------------------------------


def test_the_tick_runs_pending_imports_and_fails_stale_ones(factory, tmp_path):
    from jobs import imports as job
    from tests.conftest import make_settings

    path = importing.save_upload(
        tmp_path / "imports", "大 文件.csv", csv_bytes([person(i) for i in range(30)])
    )
    sheet = importing.read_sheet(path)
    with transaction(factory) as session:
        queued = importing.create_import(
            session, filename=str(path), column_map=importing.resolve_column_map(sheet.headers)
        ).id
        stale = LeadImport(filename="gone.csv", status=ImportStatus.RUNNING, started_at=factories.at(0))
        session.add(stale)
        session.flush()
        stale_id = stale.id

    class Ctx:
        session_factory = factory
        settings = make_settings("sqlite://")

    assert job.run_pending_imports(Ctx(), now=factories.at(0) + timedelta(hours=3)) == [queued]  # type: ignore[arg-type]
    assert job.run_pending_imports(Ctx()) == []  # type: ignore[arg-type]
    with factory() as session:
        done = session.get_one(LeadImport, queued)
        failed = session.get_one(LeadImport, stale_id)
    assert done.status is ImportStatus.DONE and done.created_count == 30
    assert failed.status is ImportStatus.FAILED and "run it again" in failed.failure


# --- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(factory, clean_db, tmp_path, monkeypatch) -> sessionmaker[Session]:
    monkeypatch.setenv("SCRM_DATABASE_URL", clean_db)
    monkeypatch.setenv("SCRM_INSTANCE_DIR", str(tmp_path / "instance"))
    return factory


def test_cli_imports_with_a_summary_and_the_row_errors(cli_env, tmp_path):
    from scrm.cli import cli

    rows = [person(i) for i in range(60)] + [person(57)]
    for i in range(55):
        rows[i][1] = "12"  # 55 bad phones: 50 printed, all in the CSV
    file = tmp_path / "线索.csv"
    file.write_bytes(
        csv_bytes(rows, ["Name", "联系电话", "Email", "公司", "职位", "地区", "备注"], encoding="gbk")
    )
    errors = tmp_path / "errors.csv"
    result = CliRunner().invoke(
        cli,
        [
            "leads",
            "import",
            str(file),
            "--map",
            "phone=联系电话",
            "--source",
            "expo",
            "--errors-csv",
            str(errors),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "61 rows, gbk" in result.output
    assert "created 5, merged 0, flagged 1, skipped 0; 55 rows with errors" in result.output
    assert "row 2, 联系电话: not a valid phone number" in result.output
    assert "… and 5 more" in result.output
    with errors.open(encoding="utf-8-sig") as f:
        written = list(csv.reader(f))
    assert written[0] == ["row", "column", "reason"] and len(written) == 56
    assert count(cli_env, Lead, Lead.source == "expo") == 6


def test_cli_dry_run_bad_usage_and_failure(cli_env, tmp_path, monkeypatch):
    from scrm.cli import cli

    file = tmp_path / "a.csv"
    file.write_bytes(csv_bytes([person(1), person(2)]))
    dry = CliRunner().invoke(cli, ["leads", "import", str(file), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "dry run: would be created 2" in dry.output
    assert count(cli_env, Lead) == count(cli_env, LeadImport) == 0

    bad_map = CliRunner().invoke(cli, ["leads", "import", str(file), "--map", "phone=电话"])
    assert bad_map.exit_code == 2 and "no column '电话'" in bad_map.output
    bad_owner = CliRunner().invoke(cli, ["leads", "import", str(file), "--owner", "nobody"])
    assert bad_owner.exit_code == 2 and "no staff member" in bad_owner.output
    bad_mode = CliRunner().invoke(cli, ["leads", "import", str(file), "--on-duplicate", "replace"])
    assert bad_mode.exit_code == 2

    def broken_flush(self: Any) -> None:
        raise RuntimeError("connection lost")

    monkeypatch.setattr(importing._Importer, "flush", broken_flush)
    failed = CliRunner().invoke(cli, ["leads", "import", str(file)])
    assert failed.exit_code == 1
    assert "import failed" in failed.output and "connection lost" in failed.output
    assert count(cli_env, Lead) == 0
    assert count(cli_env, LeadImport, LeadImport.status == ImportStatus.FAILED) == 1


def test_save_upload_keeps_a_safe_name(tmp_path):
    path = importing.save_upload(tmp_path, "../../etc/线索 表.xlsx", b"x")
    assert path.parent == tmp_path and path.name.endswith("线索_表.xlsx")
    assert Path(path).read_bytes() == b"x"
