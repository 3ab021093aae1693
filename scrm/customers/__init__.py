"""Customers (客户): the business subject, a company or a person, with its contacts."""
