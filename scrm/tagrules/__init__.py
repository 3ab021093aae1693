"""Auto-tagging rules: on add (channel, time of day), on joining a customer group, on a keyword in
chat, on a lead's grade or status; idempotent, and a rep's manual removal beats a rule."""
