"""Leads (线索): raw prospect information, not yet qualified, often not yet a friend."""
