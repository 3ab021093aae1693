"""scrm: a self-hosted WeCom (企业微信) SCRM service."""
