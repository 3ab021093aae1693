"""The directory: WeCom members (staff) with their scrm role and departments, and API keys."""
