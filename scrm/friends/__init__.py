"""Friendships (好友): add, edit, delete by either side, transfer — and what follows each."""
