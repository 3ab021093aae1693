"""People: the external contact as WeCom sees them, and their link to a lead or a contact."""
