"""The HTTP edge: WeCom callback, console pages, sidebar and JSON API (Flask blueprints).

Views own the transaction (DESIGN §6.1). The composition root (``scrm.app``) hands the web tier a
``WebRuntime`` with the Context and the after-ack hook, so the web never imports the scheduler.
"""
