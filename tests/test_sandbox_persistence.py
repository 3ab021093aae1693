"""The sandbox's state file keeps pace with a burst: changes are written in the background, a flush
writes what is pending, and the file reloads to the same world."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from scrm.sandbox import Sandbox, SandboxDriver, SandboxState


def _wait_for(predicate, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _customers_on_disk(path: Path) -> int:
    if not path.is_file():
        return -1
    return len(json.loads(path.read_text(encoding="utf-8"))["customers"])


def test_a_thousand_adds_are_written_and_reload_to_the_same_world(tmp_path: Path) -> None:
    path = tmp_path / "instance" / "sandbox.json"
    sandbox = Sandbox.create(path)
    driver = SandboxDriver(sandbox.state, "http://127.0.0.1:9/unused", deliver=False)
    added = []
    for i in range(1000):
        ext = driver.new_customer(name=f"客户{i}")
        driver.scan_channel("demo_site", ext, userid="lisi" if i % 2 else None)
        added.append(ext)
    expected = len(sandbox.state.customers)
    assert expected == 1005  # the demo's five and the burst

    # Without any flush the saver thread catches up on its own.
    assert _wait_for(lambda: _customers_on_disk(path) == expected)

    sandbox.state.flush()
    again = SandboxState(path)
    assert again.to_json() == sandbox.state.to_json()
    rel = again.relation(added[1], "lisi")
    assert rel is not None and rel["state"] == "demo_site"
    assert not path.with_name("sandbox.json.tmp").exists()


def test_concurrent_writers_lose_nothing_on_flush(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.json"
    state = SandboxState(path)
    state.seed_demo_world()

    def add(prefix: str) -> None:
        for i in range(200):
            ext = state.add_customer(f"{prefix}{i}")
            state.add_relation(ext, "zhangsan", state=prefix)

    threads = [threading.Thread(target=add, args=(f"t{n}-",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state.flush()
    again = SandboxState(path)
    assert len(again.customers) == 5 + 800
    assert again.to_json() == state.to_json()


def test_a_clean_state_writes_nothing_and_a_file_less_state_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.json"
    state = SandboxState(path)
    state.flush()
    assert not path.exists()  # nothing changed, nothing written
    memory = SandboxState()
    memory.seed_demo_world()
    memory.flush()
    assert list(tmp_path.iterdir()) == []


def test_a_process_that_exits_without_flushing_leaves_its_changes_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.json"
    script = (
        "import sys; from pathlib import Path; from scrm.sandbox import SandboxState; "
        "s = SandboxState(Path(sys.argv[1])); s.seed_demo_world(); print(s.add_customer('退出前'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    ext = done.stdout.strip()
    assert SandboxState(path).customers[ext]["name"] == "退出前"  # written at exit, not lost
