"""The timeline: what happened to a person, a lead or a customer, in order."""
