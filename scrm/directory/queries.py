"""Reads of the directory: who a member is, who a manager sees, the API keys."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.directory.models import ApiKey, Department, Staff, StaffRole


def staff_by_userid(session: Session, userid: str) -> Staff | None:
    return session.scalar(select(Staff).where(Staff.userid == userid))


def names(session: Session, userids: set[str] | list[str]) -> dict[str, str]:
    """Display names of members, for pages that would otherwise show bare userids."""
    wanted = {u for u in userids if u}
    if not wanted:
        return {}
    rows = session.execute(select(Staff.userid, Staff.name).where(Staff.userid.in_(wanted)))
    return {userid: name or userid for userid, name in rows}


def department_tree(session: Session, roots: list[int]) -> set[int]:
    """The departments ``roots`` name and every department below them."""
    children: dict[int, list[int]] = {}
    for department_id, parent_id in session.execute(
        select(Department.department_id, Department.parent_id).where(Department.is_deleted.is_(False))
    ):
        children.setdefault(parent_id, []).append(department_id)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        current = todo.pop()
        if current in found:
            continue
        found.add(current)
        todo.extend(children.get(current, []))
    return found


def visible_userids(session: Session, manager: Staff) -> set[str] | None:
    """The members a manager sees: everyone in their departments and below, and themselves.
    None means everyone: no department is known yet (the directory was never synced), and
    hiding every friend from every manager until then would help nobody."""
    if session.scalar(select(Department.id).limit(1)) is None:
        return None
    departments = department_tree(session, list(manager.department_ids or []))
    seen = {manager.userid}
    if departments:
        for staff in session.scalars(select(Staff)):
            if departments.intersection(staff.department_ids or []):
                seen.add(staff.userid)
    return seen


def api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def visible_to(session: Session, role: StaffRole, userid: str | None) -> frozenset[str] | None:
    """Whose friends a user (or an API key acting as one) may see: a rep their own, a manager
    their departments' reps, an admin everyone (None). The console and the API share this rule."""
    if role is StaffRole.ADMIN:
        return None
    if not userid:
        return frozenset()
    if role is StaffRole.REP:
        return frozenset({userid})
    manager = staff_by_userid(session, userid)
    if manager is None:
        return frozenset({userid})
    seen = visible_userids(session, manager)
    return None if seen is None else frozenset(seen)
