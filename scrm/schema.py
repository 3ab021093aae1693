"""The whole schema: imports every domain's models so ``Base.metadata`` holds every table (for
migrations, foreign keys across domains, and tests), with their status enums. Import this, not
the domains one by one, wherever the complete schema is needed."""

from __future__ import annotations

from scrm.audit.models import AuditEntry
from scrm.bot.models import BotReply, BotReplyStatus
from scrm.channels.models import Channel, ChannelStatus
from scrm.chat.models import ChatAction, ChatCursor, ChatDirection, ChatMessage
from scrm.chat.signals import ChatSignal
from scrm.customers.models import Contact, Customer, CustomerKind
from scrm.db import Base
from scrm.directory.models import ApiKey, Department, Staff, StaffRole
from scrm.followups.models import FollowUp, FollowUpKind
from scrm.friends.models import Friendship, FriendshipStatus
from scrm.groups.models import (
    CustomerGroup,
    CustomerGroupJoin,
    CustomerGroupMember,
    CustomerGroupTag,
    GroupMemberType,
)
from scrm.inbox.models import InboxEvent, InboxStatus
from scrm.leads.models import (
    AssignmentMember,
    AssignmentRule,
    DuplicateStatus,
    ImportStatus,
    Lead,
    LeadDuplicate,
    LeadGrade,
    LeadImport,
    LeadMerge,
    LeadStatus,
    OwnershipChange,
    OwnershipReason,
    PoolRule,
)
from scrm.outbox.models import OutboxCommand, OutboxStatus
from scrm.people.models import ExternalContact
from scrm.tagrules.models import MatchMode, RuleTrigger, TagRule, TagRuleHit
from scrm.tags.models import (
    FriendshipTag,
    FriendshipTagRemoval,
    Tag,
    TagBulk,
    TagBulkStatus,
    TagGroup,
    TagSource,
)
from scrm.timeline.models import Activity, ActivityKind
from scrm.wecom.models import WeComProblem, WeComToken

__all__ = [
    "AssignmentMember",
    "AssignmentRule",
    "AuditEntry",
    "BotReply",
    "BotReplyStatus",
    "DuplicateStatus",
    "FollowUp",
    "FollowUpKind",
    "ImportStatus",
    "LeadDuplicate",
    "LeadGrade",
    "LeadImport",
    "LeadMerge",
    "OwnershipChange",
    "OwnershipReason",
    "PoolRule",
    "ActivityKind",
    "ChannelStatus",
    "ChatSignal",
    "ChatAction",
    "ChatCursor",
    "ChatDirection",
    "ChatMessage",
    "CustomerKind",
    "FriendshipStatus",
    "GroupMemberType",
    "InboxStatus",
    "LeadStatus",
    "OutboxStatus",
    "StaffRole",
    "TagSource",
    "Activity",
    "ApiKey",
    "Base",
    "Channel",
    "Contact",
    "Customer",
    "CustomerGroup",
    "CustomerGroupJoin",
    "CustomerGroupMember",
    "CustomerGroupTag",
    "Department",
    "ExternalContact",
    "Friendship",
    "FriendshipTag",
    "FriendshipTagRemoval",
    "InboxEvent",
    "Lead",
    "OutboxCommand",
    "Staff",
    "Tag",
    "TagBulk",
    "TagBulkStatus",
    "TagGroup",
    "TagRule",
    "TagRuleHit",
    "MatchMode",
    "RuleTrigger",
    "WeComProblem",
    "WeComToken",
]
