"""The WeCom boundary: callback crypto, hardened parsing and the server-API gateway.

This package is the only place in scrm that imports wechatpy (DESIGN §3).
"""
