"""Follow-up records (跟进记录) on leads and customers: calls, visits, WeCom chats, emails, notes."""
