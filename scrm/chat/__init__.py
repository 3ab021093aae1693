"""Chat: archived messages (会话存档) stored once by msgid, the archive sources behind one
interface, and the per-friendship signals they feed (last contact, silence, rep response time)."""
