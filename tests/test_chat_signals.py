"""Working hours (scrm.timeutil.WorkingHours, its settings) and the chat signals per friendship
(scrm.chat.signals.record): last customer and rep messages, the open wait, first-response times in
working hours, out of order and duplicated input.

Times are Beijing wall clock (``bj``) unless a test is about another zone. 2026-12-04 is a Friday.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config import SettingsError, load_settings
from scrm.chat.signals import ChatSignal, SignalInput, record
from scrm.schema import ExternalContact, Friendship
from scrm.timeutil import SHANGHAI, UTC, WorkingHours

HOURS = WorkingHours()


def bj(day: int, hour: int, minute: int = 0, month: int = 12) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


# --- working hours -----------------------------------------------------------------------------


def test_friday_evening_to_monday_morning_is_twenty_working_minutes() -> None:
    assert HOURS.working_seconds_between(bj(4, 17, 50), bj(7, 9, 10)) == 20 * 60


def test_within_one_day_and_outside_hours() -> None:
    assert HOURS.working_seconds_between(bj(7, 10), bj(7, 11, 30)) == 90 * 60
    # Before opening and after closing count nothing; a whole day counts nine hours.
    assert HOURS.working_seconds_between(bj(7, 6), bj(7, 8, 59)) == 0
    assert HOURS.working_seconds_between(bj(7, 18), bj(7, 23)) == 0
    assert HOURS.working_seconds_between(bj(7, 0), bj(8, 0)) == 9 * 3600
    # A whole week (Monday to Monday) is five working days.
    assert HOURS.working_seconds_between(bj(7, 9), bj(14, 9)) == 5 * 9 * 3600


def test_start_after_end_is_zero() -> None:
    assert HOURS.working_seconds_between(bj(7, 11), bj(7, 10)) == 0
    assert HOURS.working_seconds_between(bj(7, 11), bj(7, 11)) == 0


def test_a_holiday_counts_nothing() -> None:
    # 2026-10-01 (Thursday) and 10-02 (Friday) off: Wednesday 17:00 → Monday 10:00 = 1 h + 1 h.
    hours = WorkingHours(holidays=frozenset({date(2026, 10, 1), date(2026, 10, 2)}))
    start, end = bj(30, 17, month=9), bj(5, 10, month=10)
    assert hours.working_seconds_between(start, end) == 2 * 3600
    assert HOURS.working_seconds_between(start, end) == (1 + 9 + 9 + 1) * 3600


def test_a_tiaoxiu_saturday_is_a_working_day() -> None:
    # 调休: Saturday 2026-12-05 is worked. Friday 17:00 → Monday 10:00 = 1 + 9 + 1 hours.
    hours = WorkingHours(workdays=frozenset({date(2026, 12, 5)}))
    assert hours.working_seconds_between(bj(4, 17), bj(7, 10)) == 11 * 3600
    assert hours.next_working_moment(bj(4, 19)) == bj(5, 9)
    assert HOURS.next_working_moment(bj(4, 19)) == bj(7, 9)


def test_next_working_moment() -> None:
    assert HOURS.next_working_moment(bj(7, 10)) == bj(7, 10)  # inside: itself
    assert HOURS.next_working_moment(bj(7, 7)) == bj(7, 9)  # before opening
    assert HOURS.next_working_moment(bj(7, 18)) == bj(8, 9)  # closing time is not inside
    assert HOURS.next_working_moment(bj(5, 12)) == bj(7, 9)  # Saturday → Monday
    holiday = WorkingHours(holidays=frozenset({date(2026, 12, 7)}))
    assert holiday.next_working_moment(bj(5, 12)) == bj(8, 9)


def test_the_zone_is_configurable_and_dst_keeps_the_wall_clock() -> None:
    berlin = WorkingHours(tz="Europe/Berlin")
    zone = berlin.zone
    # 2026-03-29 (Sunday) Europe springs forward; Friday 17:00 → Monday 10:00 is 1 + 1 hours, and
    # Monday's 09:00 is 07:00 UTC (summer time) where Friday's was 08:00 UTC.
    friday = datetime(2026, 3, 27, 17, tzinfo=zone)
    monday = datetime(2026, 3, 30, 10, tzinfo=zone)
    assert berlin.working_seconds_between(friday, monday) == 2 * 3600
    assert berlin.next_working_moment(friday + timedelta(hours=2)) == datetime(2026, 3, 30, 7, tzinfo=UTC)
    # The same UTC instants are other working times in Shanghai's zone.
    assert HOURS.working_seconds_between(friday, monday) != 2 * 3600


def test_settings_parse_and_name_the_bad_variable() -> None:
    settings = load_settings(
        {
            "SCRM_WORK_TZ": "Asia/Hong_Kong",
            "SCRM_WORK_HOURS": "08:30-17:30",
            "SCRM_WORK_DAYS": "1-5,7",
            "SCRM_HOLIDAYS": "2026-10-01, 2026-10-02",
            "SCRM_WORKDAYS": "2026-10-10",
        }
    )
    hours = WorkingHours.from_settings(settings)
    assert hours == WorkingHours(
        tz="Asia/Hong_Kong",
        open_minute=8 * 60 + 30,
        close_minute=17 * 60 + 30,
        weekdays=frozenset({1, 2, 3, 4, 5, 7}),
        holidays=frozenset({date(2026, 10, 1), date(2026, 10, 2)}),
        workdays=frozenset({date(2026, 10, 10)}),
    )
    assert WorkingHours.from_settings(load_settings({})) == WorkingHours()
    assert WorkingHours.from_settings(load_settings({"SCRM_WORK_HOURS": "00:00-24:00"})).close_minute == 1440
    bad = {
        "SCRM_WORK_TZ": "Mars/Olympus",
        "SCRM_WORK_HOURS": "18:00-09:00",
        "SCRM_WORK_DAYS": "0-5",
        "SCRM_HOLIDAYS": "2026-13-01",
        "SCRM_WORKDAYS": "tomorrow",
    }
    for name, value in bad.items():
        with pytest.raises(SettingsError, match=name):
            load_settings({name: value})
    for value in ("9-18", "09:00-18:60", "09:00-25:00", "1-8", "5-1", ""):
        name = "SCRM_WORK_DAYS" if "-" in value and ":" not in value else "SCRM_WORK_HOURS"
        if not value:
            continue
        with pytest.raises(SettingsError, match=name):
            load_settings({name: value})
    with pytest.raises(SettingsError, match="SCRM_HOLIDAYS and SCRM_WORKDAYS both list 2026-10-01"):
        load_settings({"SCRM_HOLIDAYS": "2026-10-01", "SCRM_WORKDAYS": "2026-10-01"})


# --- record() ----------------------------------------------------------------------------------


def _friendship(session: Session, external_userid: str = "wmCUST1", userid: str = "zhangsan") -> int:
    contact = ExternalContact(external_userid=external_userid, name="客户")
    session.add(contact)
    session.flush()
    row = Friendship(external_contact_id=contact.id, external_userid=external_userid, userid=userid)
    session.add(row)
    session.flush()
    return row.id


def _c(fid: int, moment: datetime) -> SignalInput:
    return SignalInput(fid, "customer", moment)


def _r(fid: int, moment: datetime) -> SignalInput:
    return SignalInput(fid, "rep", moment)


def _signal(session: Session, fid: int) -> dict[str, Any]:
    session.expire_all()
    row = session.get(ChatSignal, fid)
    assert row is not None
    return {
        "customer": row.last_customer_message_at,
        "rep": row.last_rep_message_at,
        "last": row.last_message_at,
        "waiting": row.waiting_since,
        "latest_s": row.first_response_s,
        "count": row.response_count,
        "total_s": row.response_total_s,
    }


def test_in_order_waits_and_answers(db_session: Session) -> None:
    fid = _friendship(db_session)
    # Monday: the customer writes at 10:00 and 10:05, the rep answers at 10:30 (30 min).
    assert record(db_session, [_c(fid, bj(7, 10)), _c(fid, bj(7, 10, 5))]) == 1
    s = _signal(db_session, fid)
    assert s["waiting"] == bj(7, 10) and s["customer"] == bj(7, 10, 5) and s["rep"] is None
    assert s["latest_s"] is None and s["count"] == 0 and s["last"] == bj(7, 10, 5)

    record(db_session, [_r(fid, bj(7, 10, 30)), _r(fid, bj(7, 10, 40))])
    s = _signal(db_session, fid)
    assert s["waiting"] is None and s["rep"] == bj(7, 10, 40) and s["last"] == bj(7, 10, 40)
    assert (s["latest_s"], s["count"], s["total_s"]) == (30 * 60, 1, 30 * 60)

    # Friday 17:50 a new question, answered Monday 09:10: 20 working minutes.
    record(db_session, [_c(fid, bj(11, 17, 50))])
    assert _signal(db_session, fid)["waiting"] == bj(11, 17, 50)
    record(db_session, [_r(fid, bj(14, 9, 10))])
    s = _signal(db_session, fid)
    assert s["waiting"] is None
    assert (s["latest_s"], s["count"], s["total_s"]) == (20 * 60, 2, 50 * 60)


def test_one_batch_with_several_cycles_and_friendships(db_session: Session) -> None:
    a, b = _friendship(db_session, "wmA"), _friendship(db_session, "wmB", "lisi")
    batch = [
        _c(a, bj(7, 10)),
        _r(b, bj(7, 9, 30)),  # a rep writing first opens no wait
        _r(a, bj(7, 10, 10)),
        _c(a, bj(7, 11)),
        _r(a, bj(7, 11, 45)),
        _c(a, bj(7, 15)),  # still waiting at the end of the batch
    ]
    assert record(db_session, batch) == 2
    s = _signal(db_session, a)
    assert (s["latest_s"], s["count"], s["total_s"]) == (45 * 60, 2, 55 * 60)
    assert s["waiting"] == bj(7, 15) and s["customer"] == bj(7, 15) and s["rep"] == bj(7, 11, 45)
    t = _signal(db_session, b)
    assert t["waiting"] is None and t["customer"] is None and t["rep"] == bj(7, 9, 30) and t["count"] == 0
    assert record(db_session, []) == 0


def test_out_of_order_batches_never_move_figures_back(db_session: Session) -> None:
    fid = _friendship(db_session)
    # The newest batch first: customer 11:00 waits; the older batch then brings 09:00 and 09:30.
    record(db_session, [_c(fid, bj(7, 11))])
    record(db_session, [_c(fid, bj(7, 9)), _r(fid, bj(7, 9, 30))])
    s = _signal(db_session, fid)
    assert s["customer"] == bj(7, 11) and s["rep"] == bj(7, 9, 30) and s["last"] == bj(7, 11)
    # The older exchange is history: the 11:00 wait stays open from 11:00, and the 09:00 → 09:30
    # answer counts as it happened (the rep answered a wait that was open then).
    assert s["waiting"] == bj(7, 11)
    assert (s["latest_s"], s["count"]) == (30 * 60, 1)

    # A late customer message after the last rep message but before the open wait moves its start.
    record(db_session, [_c(fid, bj(7, 10))])
    assert _signal(db_session, fid)["waiting"] == bj(7, 10)
    # One before the last rep message is already answered history: nothing moves.
    record(db_session, [_c(fid, bj(7, 9, 15))])
    s = _signal(db_session, fid)
    assert s["waiting"] == bj(7, 10) and s["customer"] == bj(7, 11) and s["count"] == 1

    # An old rep message (before the wait) does not answer it, nor move last_rep back.
    record(db_session, [_r(fid, bj(7, 9, 20))])
    s = _signal(db_session, fid)
    assert s["waiting"] == bj(7, 10) and s["rep"] == bj(7, 9, 30)


def test_a_late_earlier_reply_corrects_the_latest_response(db_session: Session) -> None:
    fid = _friendship(db_session)
    record(db_session, [_c(fid, bj(7, 10)), _r(fid, bj(7, 12))])
    assert (_signal(db_session, fid)["latest_s"], _signal(db_session, fid)["total_s"]) == (7200, 7200)
    # The archive later delivers the rep's 10:15 reply: that was the first response.
    record(db_session, [_r(fid, bj(7, 10, 15))])
    s = _signal(db_session, fid)
    assert (s["latest_s"], s["count"], s["total_s"]) == (15 * 60, 1, 15 * 60)
    assert s["rep"] == bj(7, 12) and s["waiting"] is None


def test_duplicates_change_nothing(db_session: Session) -> None:
    fid = _friendship(db_session)
    batch = [_c(fid, bj(7, 10)), _r(fid, bj(7, 10, 20)), _c(fid, bj(7, 14))]
    record(db_session, batch)
    before = _signal(db_session, fid)
    assert record(db_session, batch) == 0
    assert record(db_session, [*batch, *batch]) == 0
    assert _signal(db_session, fid) == before
    # The same messages twice in one first batch count once too.
    other = _friendship(db_session, "wmB")
    record(db_session, [_c(other, bj(7, 10)), _c(other, bj(7, 10)), _r(other, bj(7, 10, 20))] * 2)
    s = _signal(db_session, other)
    assert (s["latest_s"], s["count"]) == (20 * 60, 1)


def test_response_time_counts_working_hours_only(db_session: Session) -> None:
    fid = _friendship(db_session)
    # Saturday's message answered Monday 09:30: 30 working minutes; a night-time reply inside the
    # window's closed hours counts 0 s (answered before work began).
    record(db_session, [_c(fid, bj(5, 11)), _r(fid, bj(7, 9, 30))])
    record(db_session, [_c(fid, bj(7, 20)), _r(fid, bj(7, 22))])
    s = _signal(db_session, fid)
    assert (s["latest_s"], s["count"], s["total_s"]) == (0, 2, 30 * 60)
    # Monday 17:00 → Wednesday 10:00 with Tuesday a holiday: 1 + 1 hours.
    hours = WorkingHours(holidays=frozenset({date(2026, 12, 15)}))
    record(db_session, [_c(fid, bj(14, 17)), _r(fid, bj(16, 10))], hours)
    assert _signal(db_session, fid)["latest_s"] == (1 + 1) * 3600


def test_same_second_keeps_the_given_order(db_session: Session) -> None:
    fid = _friendship(db_session)
    record(db_session, [_r(fid, bj(7, 10)), _c(fid, bj(7, 10))])
    assert _signal(db_session, fid)["waiting"] is None  # at the rep's second: not after it
    other = _friendship(db_session, "wmB")
    record(db_session, [_c(other, bj(7, 10)), _r(other, bj(7, 10))])
    s = _signal(db_session, other)
    assert s["waiting"] is None and (s["latest_s"], s["count"]) == (0, 1)


def test_a_big_batch_costs_a_few_statements(db_session: Session) -> None:
    from sqlalchemy import event

    ids = [_friendship(db_session, f"wm{n:04d}") for n in range(1500)]
    batch = [m for fid in ids for m in (_c(fid, bj(7, 10)), _r(fid, bj(7, 10, 5)), _c(fid, bj(7, 11)))]
    statements: list[str] = []
    engine = db_session.get_bind()

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    try:
        assert record(db_session, batch) == 1500
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # Two chunks of 1000 ids: ensure + read per chunk, one executemany update (drivers may split
    # an executemany into pages; the count stays independent of the number of messages).
    assert len(statements) <= 8, statements
    open_waits = select(func.count()).select_from(ChatSignal).where(ChatSignal.waiting_since.is_not(None))
    waiting = db_session.scalar(open_waits)
    assert waiting == 1500


def test_a_row_inserted_meanwhile_is_folded_onto(db_session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another ingest inserts a friendship's first row between this one's read and its insert:
    the insert does nothing for it, and this batch is folded onto the row that won."""
    from scrm.chat import signals

    fid = _friendship(db_session)
    record(db_session, [_c(fid, bj(7, 10))])  # the row "the other ingest" wrote
    real = signals._fold_stored
    calls: list[list[int]] = []

    def blind_first_read(connection: Any, dialect: str, table: Any, ids: list[int], *rest: Any) -> set[int]:
        calls.append(list(ids))
        if len(calls) == 1:
            return set()  # as if read before the other ingest's row was there
        return real(connection, dialect, table, ids, *rest)

    monkeypatch.setattr(signals, "_fold_stored", blind_first_read)
    assert record(db_session, [_r(fid, bj(7, 10, 30))]) == 1
    assert calls == [[fid], [fid]]
    s = _signal(db_session, fid)
    assert s["waiting"] is None and (s["latest_s"], s["count"]) == (30 * 60, 1)
