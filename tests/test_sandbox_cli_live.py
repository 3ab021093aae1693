"""``scrm sandbox`` against a real ``make run PORT=…``: the quick start's two commands (``scrm db
upgrade``, ``scrm serve --host 127.0.0.1 --port $(PORT)``) on a port other than 8000, in an instance
directory of their own; the CLI is run as a process from another working directory and finds that
scrm through SCRM_URL, or through the serve file in SCRM_INSTANCE_DIR. A customer it creates and
scans becomes a friend in scrm. With nothing running it says, in one line, what to set.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Row, create_engine, select

from scrm.schema import Friendship
from tests.processes import (
    clean_env,
    free_port,
    running,
    scrm_command,
    sqlite_leg_only,
    start_serve,
    wait_for,
)

# A contact way of the sandbox's demo corp (zhangsan's 展会扫码 code): there from the start.
DEMO_STATE = "demo_expo"


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        scrm_command("sandbox", *args),
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def friend_of(engine: Engine, external_userid: str) -> Row[Any] | None:
    with engine.connect() as conn:
        return conn.execute(
            select(Friendship.userid).where(Friendship.external_userid == external_userid)
        ).first()


def test_the_sandbox_cli_drives_a_make_run_on_another_port_from_another_directory(tmp_path):
    sqlite_leg_only()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    serve = start_serve(tmp_path / "instance", free_port(), tmp_path / "serve.log")
    engine = create_engine(serve.database_url)
    try:
        with running(serve.process):
            ways = [
                # only SCRM_URL: the CLI has no idea of the instance directory
                {"SCRM_URL": serve.url},
                # nothing but where the instance lives: the serve file `scrm serve` left there
                {"SCRM_INSTANCE_DIR": str(serve.instance)},
            ]
            for n, env in enumerate(ways):
                made = cli(elsewhere, "new-customer", "--name", f"访客{n}", **env)
                assert made.returncode == 0, made.stderr
                external_userid = made.stdout.strip()
                assert re.fullmatch(r"wm[A-Za-z0-9_-]+", external_userid), made.stdout  # bare, for $(…)
                scanned = cli(
                    elsewhere, "scan", "--channel", DEMO_STATE, "--customer", external_userid, **env
                )
                assert scanned.returncode == 0, scanned.stderr
                assert "HTTP 200" in scanned.stdout and "<xml" not in scanned.stdout  # no decrypted callback
                friend = wait_for(
                    lambda: friend_of(engine, external_userid),  # noqa: B023 - called within this iteration
                    timeout=20,
                    what=f"{external_userid} is a friend in scrm",
                    proc=serve.process,
                )
                assert friend.userid == "zhangsan"
    finally:
        engine.dispose()


def test_with_nothing_running_the_sandbox_cli_says_what_to_set_in_one_line(tmp_path):
    sqlite_leg_only()
    # An empty instance directory, and a public URL where nothing listens (not the default 8000,
    # where a developer's own scrm may be running).
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = cli(
        tmp_path, "new-customer", "--name", "X", SCRM_INSTANCE_DIR=str(tmp_path), SCRM_PUBLIC_URL=nowhere
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SCRM_URL" in lines[0] and "Traceback" not in result.stderr
