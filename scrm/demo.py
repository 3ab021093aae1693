"""The demo that ``make run`` shows a newcomer: a sandbox corp with friends, channels, tags and a group.

It runs against a live scrm (embedded sandbox): syncs staff and the tag library from the sandbox
through the real gateway, creates two channel QR codes through the outbox, then asks the sandbox
driver (over HTTP) to play customers scanning them, editing, deleting and joining a group. Then the
sales side: an assignment rule and a pool rule, leads from a web form, an import and an ad
campaign (some routed to reps, some left in the public pool), a likely duplicate pair for review,
and a lead converted into a customer with a contact and a follow-up. Then tags and chat: a tag
group made in scrm (sent to WeCom) and a local one, a rule per trigger, a customer who leaves the
group and rejoins, an archived chat thread with a waiting and a silent customer, a bulk tagging,
and a rep's bot commands. It does nothing when scrm
already holds friendships, so restarts don't duplicate the demo.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import requests
from sqlalchemy import func, select

from jobs import work
from scrm.channels import service as channels
from scrm.channels.models import Channel, ChannelStatus
from scrm.context import Context
from scrm.db import read, transaction
from scrm.directory import service as directory
from scrm.directory.models import Staff, StaffRole
from scrm.friends.models import Friendship
from scrm.tagrules import demo as tagrule_demo
from scrm.tags import library as tag_library
from scrm.tags import queries as tag_queries
from scrm.tags import service as tags
from scrm.tags.models import Tag

log = logging.getLogger(__name__)

DEMO_ROLES = {"wangwu": StaffRole.MANAGER, "admin": StaffRole.ADMIN}


def sync_staff(ctx: Context) -> int:
    """Directory → departments, and staff rows (names, departments, active flags) for every member
    with customer contact."""
    departments = ctx.gateway.list_departments()
    userids = set(ctx.gateway.list_follow_users())
    users = [ctx.gateway.get_user(userid) for userid in sorted(userids)]
    with transaction(ctx.session_factory) as session:
        directory.sync_departments(session, departments)
        for user in users:
            directory.apply_user(session, user["userid"], user)
    return len(users)


def _driver(ctx: Context, action: str, **args: Any) -> dict[str, Any]:
    base = ctx.settings.wecom_api_base.removesuffix("cgi-bin/")
    response = requests.post(f"{base}_admin/driver/{action}", json=args, timeout=30)
    body = response.json()
    if response.status_code >= 400 or not body.get("ok"):
        raise RuntimeError(f"sandbox driver {action} failed: {body.get('error', response.status_code)}")
    return {"result": body.get("result")}


def seed(ctx: Context) -> bool:
    with read(ctx.session_factory) as session:
        if session.scalar(select(func.count()).select_from(Friendship)):
            log.info("demo: scrm already has friendships; not seeding")
            return False
    # Admin and manager exist in the sandbox directory even without customers of their own.
    for userid in ("admin", "wangwu"):
        user = ctx.gateway.get_user(userid)
        with transaction(ctx.session_factory) as session:
            directory.apply_user(session, userid, user)
    sync_staff(ctx)
    library = ctx.gateway.get_corp_tag_list()  # WeCom calls stay outside transactions
    with transaction(ctx.session_factory) as session:
        tags.sync_library(session, library)
        for userid, role in DEMO_ROLES.items():
            staff = session.scalar(select(Staff).where(Staff.userid == userid))
            if staff is not None:
                staff.role = role
        tag_ids = {name: tag_id for tag_id, name in tag_queries.names(session, _all_tag_ids(session)).items()}
        # Tags both ways: a group made here goes to WeCom through the outbox (add_corp_tag) and
        # comes back with WeCom's ids; a local group never leaves scrm. The rules come before the
        # customers, so the adds, the group join and the chat below are tagged by them.
        tag_library.create_group(session, "意向阶段 Intent", ["初步了解", "深度沟通", "即将成交"])
        tag_library.seed_demo_local_tags(session)
        tagrule_demo.seed_demo_rules(session)
        expo = channels.create_channel(
            session,
            name="2026 上海展会",
            userids=["zhangsan"],
            auto_tag_ids=[t for t in [tag_ids.get("展会")] if t],
            welcome_text="您好，我是张三，感谢在展会上扫码！资料稍后发您。",
        )
        web = channels.create_channel(
            session,
            name="官网咨询",
            userids=["lisi"],
            auto_tag_ids=[t for t in [tag_ids.get("官网")] if t],
            welcome_text="您好，我是李四，很高兴为您服务。",
        )
        states = {"expo": expo.state, "web": web.state}
    work.drain_outbox(ctx)
    _wait_channels_active(ctx)

    customers = [
        ("王小明", "expo", ["13800138000"]),
        ("李娜", "expo", []),
        ("陈晨", "web", ["+86 139 0013 9000"]),
        ("赵雷", "web", []),
        ("孙丽", "expo", []),
        ("周杰", "web", []),
    ]
    made: list[str] = []
    for name, channel_key, mobiles in customers:
        external_userid = str(_driver(ctx, "new_customer", name=name)["result"])
        _driver(
            ctx,
            "scan_channel",
            state_or_config_id=states[channel_key],
            external_userid=external_userid,
            remark_mobiles=mobiles,
        )
        made.append(external_userid)
    # The same person adds a second rep: one lead, two friendships.
    _driver(ctx, "add_customer", userid="lisi", external_userid=made[0])
    _driver(
        ctx,
        "edit",
        userid="zhangsan",
        external_userid=made[1],
        remark="李娜-采购经理",
        description="关注价格",
    )
    _driver(ctx, "customer_deletes_rep", userid="lisi", external_userid=made[3])
    chat = _driver(ctx, "create_group", owner="zhangsan", name="展会客户群", members=[])["result"]
    chat_id = chat.get("chat_id")
    if chat_id:
        _driver(ctx, "join_group", chat_id=chat_id, external_userid=made[0])
        # Joins over time: one customer scans the group's QR code, leaves, and comes back. A second
        # apart: membership events carry whole seconds, and a join, leave and rejoin within one
        # second cannot be told apart from a replay.
        for action, scene in (("join_group", {"join_scene": 3}), ("leave_group", {"quit_scene": 0})):
            _driver(ctx, action, chat_id=chat_id, external_userid=made[4], **scene)
            time.sleep(1.1)
        _driver(ctx, "join_group", chat_id=chat_id, external_userid=made[4], join_scene=3)
    log.info("demo: seeded %s customers through channels %s", len(made), states)
    seed_leads(ctx)
    seed_chat_and_tags(ctx, chat_id)
    return True


def seed_chat_and_tags(ctx: Context, chat_id: str | None) -> None:
    """Chat signals and tagging: an archived thread (a price question the keyword rule tags, a
    customer waiting for our reply, one silent for ten days), a bulk tagging with its progress
    page, a local tag on the customer group, and a rep working from the bot (记, 提醒)."""
    from jobs import chat as chat_jobs
    from scrm.friends import bulk
    from scrm.groups import service as groups
    from scrm.groups.models import CustomerGroup

    work.drain_outbox(ctx)  # the add_corp_tag above, so the bulk can use WeCom's ids
    group_id = _wait_for_group(ctx, chat_id) if chat_id else None
    chat_jobs.seed_demo_chat(ctx)
    with transaction(ctx.session_factory) as session:
        bulk.seed_demo(session, actor="admin", limit=4)
        group = session.get(CustomerGroup, group_id) if group_id is not None else None
        local = session.scalar(select(Tag.tag_id).where(Tag.is_local.is_(True), Tag.is_deleted.is_(False)))
        if group is not None and local is not None:
            groups.change_tags(session, group, add=[local], actor="wangwu")
    # zhangsan works from the chat window: a note on the friend he chatted with last, a reminder.
    _driver(ctx, "send_text", userid="zhangsan", content="记 客户问了旗舰款报价，已发报价单，周五回访")
    _driver(ctx, "send_text", userid="zhangsan", content="提醒 明天10点 给客户回电话确认报价")
    work.drain_outbox(ctx)
    log.info("demo: seeded a chat thread, rule tags, a bulk tagging, a group tag and two bot commands")


# (source, name, phone, company, region, industry, utm_source): three doors leads come through.
DEMO_LEADS = [
    ("web_form", "刘洋", "13911112222", "上海云帆信息技术有限公司", "上海", "软件", ""),
    ("web_form", "黄敏", "13922223333", "", "北京", "", ""),
    ("import", "吴刚", "13933334444", "杭州青禾贸易有限公司", "浙江", "贸易", ""),
    ("import", "郑爽", "", "深圳星河电子股份有限公司", "广东", "制造", ""),
    ("ad", "何静", "13955556666", "苏州远景咨询有限公司", "江苏", "咨询", "baidu"),
    ("ad", "马超", "13966667777", "", "四川", "", "douyin"),
    # A likely duplicate of the first lead: same person, the company spelt another way.
    ("import", "刘 洋", "", "云帆信息技术（上海）有限公司", "上海", "软件", ""),
]


def seed_leads(ctx: Context) -> None:
    """The sales side of the demo, through the same services the API and the console use."""
    from datetime import timedelta

    from scrm.customers import service as customers
    from scrm.customers.models import CustomerKind
    from scrm.followups import service as followups
    from scrm.followups.models import FollowUpKind
    from scrm.leads import assignment
    from scrm.leads import service as leads
    from scrm.leads.fields import parse_lead
    from scrm.leads.models import PoolRule
    from scrm.leads.normalize import company_key
    from scrm.timeutil import utcnow

    with transaction(ctx.session_factory) as session:
        session.add(PoolRule(name="默认公海 Default pool", source=None))
        assignment.create_rule(
            session,
            name="华东线索 East China",
            priority=10,
            filters={"region": ["上海", "江苏", "浙江"]},
            members=[
                assignment.MemberSpec("zhangsan", daily_capacity=20, monthly_capacity=300),
                assignment.MemberSpec("lisi", daily_capacity=20, monthly_capacity=300),
            ],
        )
        captured = []
        for source, name, phone, company, region, industry, utm_source in DEMO_LEADS:
            data = parse_lead(
                {
                    "name": name,
                    "phone": phone,
                    "company": company,
                    "region": region,
                    "industry": industry,
                    "source": source,
                    "utm_source": utm_source or None,
                }
            )
            captured.append(leads.capture(session, data, on_duplicate="flag", actor="demo").lead)
        converted = captured[2]
        leads.convert(session, converted, actor=converted.owner_userid or "admin")
        followups.log_follow_up(
            session,
            lead=converted,
            kind=FollowUpKind.CALL,
            content="电话沟通，客户确认采购意向，下周发报价。",
            next_follow_up_at=utcnow() + timedelta(days=3),
            author_userid=converted.owner_userid,
        )
        # A likely duplicate customer: the converted company entered again, spelt another way.
        customers.create_customer(
            session,
            kind=CustomerKind.COMPANY,
            name="青禾贸易（杭州）有限公司",
            company_key=company_key("青禾贸易（杭州）有限公司"),
            region="浙江",
        )
    log.info(
        "demo: seeded %s leads, an assignment rule, a converted customer and a likely duplicate of it",
        len(DEMO_LEADS),
    )


def _wait_for_group(ctx: Context, chat_id: str, timeout_s: float = 10.0) -> int | None:
    """The group's row once its create event has been applied (events apply after the ack)."""
    from scrm.groups.models import CustomerGroup

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with read(ctx.session_factory) as session:
            found = session.scalar(select(CustomerGroup.id).where(CustomerGroup.chat_id == chat_id))
        if found is not None:
            return int(found)
        time.sleep(0.1)
    return None


def _all_tag_ids(session: Any) -> list[str]:
    return list(session.scalars(select(Tag.tag_id).where(Tag.is_deleted.is_(False))))


def _wait_channels_active(ctx: Context, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with read(ctx.session_factory) as session:
            pending = session.scalar(
                select(func.count()).select_from(Channel).where(Channel.status == ChannelStatus.PENDING)
            )
        if not pending:
            return
        work.drain_outbox(ctx)
        time.sleep(0.2)
    raise RuntimeError("demo channels were not created in the sandbox within 20 s; see the outbox page")
