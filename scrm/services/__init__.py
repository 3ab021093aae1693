"""Domain logic. Every function takes a Session first and only flushes; the edge commits."""
