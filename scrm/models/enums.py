"""Status and kind enums shared by the models; stored by value (DESIGN §6.6)."""

from __future__ import annotations

from enum import StrEnum


class StaffRole(StrEnum):
    REP = "rep"
    MANAGER = "manager"
    ADMIN = "admin"


class FriendshipStatus(StrEnum):
    ACTIVE = "active"
    HALF = "half"  # customer added a "no verification" rep who has not confirmed yet
    REMOVED_BY_REP = "removed_by_rep"
    REMOVED_BY_CUSTOMER = "removed_by_customer"
    TRANSFERRED = "transferred"


class TagSource(StrEnum):
    WECOM = "wecom"
    CHANNEL = "channel"
    MANUAL = "manual"
    RULE = "rule"


class ChannelStatus(StrEnum):
    PENDING = "pending"  # add_contact_way queued in the outbox
    ACTIVE = "active"
    FAILED = "failed"


class LeadStatus(StrEnum):
    NEW = "new"
    CONTACTED = "contacted"
    QUALIFIED = "qualified"
    CONVERTED = "converted"
    DISQUALIFIED = "disqualified"


class CustomerKind(StrEnum):
    COMPANY = "company"
    PERSON = "person"


class ActivityKind(StrEnum):
    FRIEND_ADDED = "friend_added"
    FRIEND_HALF_ADDED = "friend_half_added"
    FRIEND_EDITED = "friend_edited"
    REP_DELETED_CUSTOMER = "rep_deleted_customer"
    CUSTOMER_DELETED_REP = "customer_deleted_rep"
    TRANSFERRED = "transferred"
    TRANSFER_FAILED = "transfer_failed"
    JOINED_GROUP = "joined_group"
    LEFT_GROUP = "left_group"
    LEAD_CREATED = "lead_created"
    LINKED = "linked"
    NOTE = "note"


class InboxStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"  # will be retried by the tick
    DEAD = "dead"  # retries exhausted; replay by hand
    IGNORED = "ignored"  # no handler for this event; stored and acked


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEAD = "dead"
    EXPIRED = "expired"  # e.g. a welcome code past its 20 s life


class OutboxKind(StrEnum):
    SEND_WELCOME_MSG = "send_welcome_msg"
    MARK_TAG = "mark_tag"
    REMARK = "remark"
    ADD_CONTACT_WAY = "add_contact_way"
    MESSAGE_SEND = "message_send"
    ADD_MSG_TEMPLATE = "add_msg_template"
    TRANSFER_CUSTOMER = "transfer_customer"


class GroupMemberType(StrEnum):
    STAFF = "staff"
    EXTERNAL = "external"
