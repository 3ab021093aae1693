"""``scrm sandbox …``: play WeCom's customers and reps against the sandbox of a running scrm, and
the serve file through which those commands find that scrm.

The commands talk to the sandbox's ``/_admin/`` endpoints over HTTP. Which scrm: ``--url``, else
``SCRM_URL``, else the serve file ``scrm serve`` leaves in the instance directory (``serve.json``:
its URL and pid, used only while that process lives and answers), else ``SCRM_PUBLIC_URL`` (default
``http://127.0.0.1:8000``). A problem the user can fix is one line naming what to set, exit status 2,
never a traceback. Output is short and human (``--json`` for details); no command prints a decrypted
callback.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import click
import requests

import config
from scrm.sandbox.state import DEFAULT_TIMEOUT_HOLD_MS, FAULT_ERRCODES

SERVE_FILE = "serve.json"
# Driver actions wait for scrm to acknowledge the callback they deliver.
ACTION_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 2.0
_HOW_TO_POINT = (
    "start it with `make run` (another port: `make run PORT=8731`), "
    "or point at it with SCRM_URL=http://host:port or --url http://host:port"
)


class SandboxCliError(click.ClickException):
    """A problem the user can fix: printed as one ``Error:`` line, exit status 2 like the rest of scrm."""

    exit_code = 2


def _fail(message: str) -> NoReturn:
    raise SandboxCliError(message)


# --- the serve file (written by `scrm serve`) -----------------------------------------------------


def _reachable_url(url: str) -> str:
    """A listening address as a client dials it: 0.0.0.0 / :: become loopback."""
    parts = urlsplit(url.rstrip("/"))
    host = parts.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - rewriting a wildcard bind, not binding one
        netloc = ("127.0.0.1" if host != "::" else "[::1]") + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


def write_serve_file(instance_dir: Path, url: str, pid: int | None = None) -> Path:
    """Tell the sandbox CLI where this scrm listens: ``<instance_dir>/serve.json`` with url and pid.

    Written atomically; call ``remove_serve_file`` when serving stops.
    """
    path = instance_dir / SERVE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"url": _reachable_url(url), "pid": os.getpid() if pid is None else pid}
    tmp = path.with_name(f"{SERVE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def remove_serve_file(instance_dir: Path, pid: int | None = None) -> None:
    """Remove the serve file if it is still ours (another scrm may have started since)."""
    path = instance_dir / SERVE_FILE
    info = read_serve_file(instance_dir)
    if info is not None and info.get("pid") == (os.getpid() if pid is None else pid):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def read_serve_file(instance_dir: Path) -> dict[str, Any] | None:
    """The serve file's contents, or None when it is missing or unreadable."""
    try:
        data = json.loads((instance_dir / SERVE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        return None
    return data


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except OSError:
        return False
    return True


# --- finding the running scrm ---------------------------------------------------------------------


def _sandbox_bases(url: str) -> list[str]:
    """Where a sandbox may answer for ``url``: mounted by scrm at /sandbox, or the URL itself."""
    url = url.rstrip("/")
    if url.endswith("/sandbox"):
        return [url + "/"]
    return [url + "/sandbox/", url + "/"]


def _probe(url: str) -> str | None:
    """The sandbox base URL (ending in "/") that answers for ``url``, or None."""
    for base in _sandbox_bases(url):
        try:
            resp = requests.get(base + "_admin/state", timeout=PROBE_TIMEOUT_S)
        except requests.RequestException:
            return None  # nothing listens there: no point trying the other path
        if resp.status_code == 200:
            try:
                if "corp_id" in resp.json():
                    return base
            except ValueError:
                pass
    return None


def _public_url() -> tuple[str | None, str]:
    try:
        return config.load_settings().public_url, "SCRM_PUBLIC_URL"
    except config.SettingsError as exc:
        return None, f"SCRM_PUBLIC_URL not read: configuration error: {exc}"


def find_sandbox(url: str | None) -> str:
    """The admin base of the sandbox to drive, trying the sources in order; a one-line error if none."""
    if url:
        base = _probe(url)
        if base is None:
            _fail(
                f"no scrm sandbox answers at {url.rstrip('/')} (from --url or SCRM_URL); "
                "is scrm running there, with its embedded sandbox (WECOM_API_BASE unset)?"
            )
        return base
    tried = []
    instance = config.instance_dir()
    info = read_serve_file(instance)
    serve_file = (instance / SERVE_FILE).absolute()  # absolute: the message must not depend on cwd
    if info is None:
        tried.append(f"{serve_file}: none")
    elif not _pid_alive(info.get("pid")):
        tried.append(f"{serve_file}: its pid {info.get('pid')} is not running")
    elif (base := _probe(info["url"])) is not None:
        return base
    else:
        tried.append(f"{serve_file}: {info['url']} does not answer")
    public, source = _public_url()
    if public is not None:
        if (base := _probe(public)) is not None:
            return base
        tried.append(f"{source} {public}: no answer")
    else:
        tried.append(source)
    _fail(f"no running scrm with a sandbox found ({'; '.join(tried)}); {_HOW_TO_POINT}")


@dataclass
class Target:
    """The sandbox a command drives; found on first use so ``--help`` never probes anything."""

    url: str | None
    _base: str | None = field(default=None, repr=False)

    @property
    def base(self) -> str:
        if self._base is None:
            self._base = find_sandbox(self.url)
        return self._base

    def request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.base + "_admin/" + path
        try:
            resp = requests.request(method, url, json=payload, timeout=ACTION_TIMEOUT_S)
        except requests.Timeout:
            _fail(f"the sandbox at {self.base} did not answer {path} within {ACTION_TIMEOUT_S:g} s")
        except requests.RequestException as exc:
            _fail(f"the sandbox at {self.base} went away ({type(exc).__name__}); {_HOW_TO_POINT}")
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            _fail(f"{url} answered HTTP {resp.status_code} without a sandbox answer; is that scrm's URL?")
        if resp.status_code >= 400 or data.get("ok") is False:
            _fail(str(data.get("error") or f"the sandbox refused {path} (HTTP {resp.status_code})"))
        return data

    def drive(self, action: str, **args: Any) -> tuple[Any, dict[str, str]]:
        data = self.request("POST", f"driver/{action}", {k: v for k, v in args.items() if v is not None})
        return data.get("result"), dict(data.get("names") or {})


def _target() -> Target:
    return click.get_current_context().find_object(Target) or Target(None)


def _who(names: dict[str, str], ident: str) -> str:
    name = names.get(ident)
    return f"{name} ({ident})" if name and name != ident else ident


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2))


def _report(result: dict[str, Any], summary: str, as_json: bool) -> None:
    """Print what happened and what scrm answered; a callback scrm refused is an error (exit 1)."""
    status = result.get("status")
    if as_json:
        _echo_json(result)
    elif result.get("suppressed"):
        click.echo(f"{summary}; no callback: {result['suppressed']}")
    else:
        click.echo(f"{summary}; scrm answered HTTP {status}")
    if isinstance(status, int) and status >= 400:
        click.echo(f"Error: scrm answered the callback with HTTP {status}", err=True)
        sys.exit(1)


# --- the commands ---------------------------------------------------------------------------------

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")


@click.group()
@click.option(
    "--url",
    envvar="SCRM_URL",
    metavar="URL",
    help="The running scrm, e.g. http://127.0.0.1:8731 (env SCRM_URL). Default: the one `scrm serve` "
    "recorded in the instance directory, else SCRM_PUBLIC_URL.",
)
@click.pass_context
def sandbox(ctx: click.Context, url: str | None) -> None:
    """Drive the WeCom sandbox of a running scrm: customers scan, add, edit, delete, join groups."""
    ctx.obj = Target(url or None)


@sandbox.command("status")
@JSON_OPTION
def sandbox_status(as_json: bool) -> None:
    """Where the sandbox is and what its corp holds."""
    target = _target()
    summary = target.request("GET", "state")
    if as_json:
        _echo_json({"sandbox": target.base, **summary})
        return
    faults = summary.get("faults") or {}
    click.echo(
        f"sandbox {target.base}: {summary['staff']} staff, {summary['customers']} customers, "
        f"{summary['relations']} friendships, {summary['contact_ways']} contact ways; "
        f"{_describe_faults(faults)}"
    )


@sandbox.command("new-customer")
@click.option("--name", default="微信用户", show_default=True)
@click.option("--unionid", help="The WeChat unionid (links the person across reps and apps).")
@click.option("--mobile", help="A mobile the reps will record as remark mobile when they add them.")
@JSON_OPTION
def sandbox_new_customer(name: str, unionid: str | None, mobile: str | None, as_json: bool) -> None:
    """Create a WeChat user; prints the bare external_userid, for $(…)."""
    target = _target()
    ext, _ = target.drive("new_customer", name=name, unionid=unionid, mobile=mobile)
    if as_json:
        _echo_json(target.request("GET", f"customers/{ext}")["customer"])
    else:
        click.echo(ext)


@sandbox.command("scan")
@click.option("--channel", "state", required=True, help="The channel's state or config_id.")
@click.option("--customer", "external_userid", required=True, help="An external_userid (see new-customer).")
@click.option("--userid", help="Which rep of a multi-rep code is added (default: its first).")
@click.option("--mobile", "mobiles", multiple=True, help="Remark mobile the rep records; repeatable.")
@JSON_OPTION
def sandbox_scan(
    state: str, external_userid: str, userid: str | None, mobiles: tuple[str, ...], as_json: bool
) -> None:
    """A customer scans a channel's QR code and adds its rep; scrm gets add_external_contact."""
    result, names = _target().drive(
        "scan_channel",
        state_or_config_id=state,
        external_userid=external_userid,
        userid=userid,
        remark_mobiles=list(mobiles) or None,
    )
    reps = list(result.get("reps") or [])
    summary = (
        f"{_who(names, external_userid)} scanned channel {state} and added {_who(names, result['userid'])}"
    )
    if len(reps) > 1 and userid is None:
        summary += f" (the code adds {', '.join(reps)}; pick one with --userid)"
    _report(result, summary, as_json)


@sandbox.command("add")
@click.option("--userid", required=True, help="The rep.")
@click.option("--customer", "external_userid", required=True)
@click.option("--state", default=None, help="A channel state to carry (as a QR scan would).")
@click.option("--half", is_flag=True, help="One-way add to a no-verification rep.")
@JSON_OPTION
def sandbox_add(userid: str, external_userid: str, state: str | None, half: bool, as_json: bool) -> None:
    """A rep and a customer become friends without a channel code (search, card, …)."""
    result, names = _target().drive(
        "add_customer", userid=userid, external_userid=external_userid, state=state, half=half
    )
    how = "one-way added" if half else "became friends with"
    _report(result, f"{_who(names, external_userid)} {how} {_who(names, userid)}", as_json)


@sandbox.command("edit")
@click.option("--userid", required=True, help="The rep who edits.")
@click.option("--customer", "external_userid", required=True)
@click.option("--remark")
@click.option("--description")
@click.option("--mobile", "mobiles", multiple=True, help="Replace the remark mobiles; repeatable.")
@JSON_OPTION
def sandbox_edit(
    userid: str,
    external_userid: str,
    remark: str | None,
    description: str | None,
    mobiles: tuple[str, ...],
    as_json: bool,
) -> None:
    """The rep edits the customer's remark, description or mobiles in the WeCom client."""
    if remark is None and description is None and not mobiles:
        _fail("nothing to edit: give --remark, --description or --mobile")
    result, names = _target().drive(
        "edit",
        userid=userid,
        external_userid=external_userid,
        remark=remark,
        description=description,
        remark_mobiles=list(mobiles) or None,
    )
    _report(result, f"{_who(names, userid)} edited {_who(names, external_userid)}", as_json)


@sandbox.command("delete")
@click.option("--userid", required=True, help="The rep.")
@click.option("--customer", "external_userid", required=True)
@click.option(
    "--by", type=click.Choice(["customer", "rep", "transfer"]), default="customer", show_default=True
)
@JSON_OPTION
def sandbox_delete(userid: str, external_userid: str, by: str, as_json: bool) -> None:
    """The customer deletes the rep, the rep deletes the customer, or a transfer removes the relation."""
    target = _target()
    if by == "customer":
        result, names = target.drive("customer_deletes_rep", userid=userid, external_userid=external_userid)
        summary = f"{_who(names, external_userid)} deleted {_who(names, userid)}"
    else:
        result, names = target.drive(
            "rep_deletes_customer",
            userid=userid,
            external_userid=external_userid,
            by_transfer=by == "transfer",
        )
        summary = f"{_who(names, userid)} lost {_who(names, external_userid)}" + (
            " by transfer" if by == "transfer" else ""
        )
    _report(result, summary, as_json)


@sandbox.command("join-group")
@click.option("--chat", "chat_id", required=True, help="The group chat's chat_id.")
@click.option("--customer", "external_userid", required=True)
@JSON_OPTION
def sandbox_join_group(chat_id: str, external_userid: str, as_json: bool) -> None:
    """A customer joins a customer group."""
    result, names = _target().drive("join_group", chat_id=chat_id, external_userid=external_userid)
    _report(result, f"{_who(names, external_userid)} joined group {chat_id}", as_json)


@sandbox.command("bot")
@click.option("--userid", required=True, help="The rep who messages the app.")
@click.argument("text")
@JSON_OPTION
def sandbox_bot(userid: str, text: str, as_json: bool) -> None:
    """A rep messages the scrm app (e.g. "记 客户要报价"); prints the bot's decrypted reply."""
    result, names = _target().drive("send_text", userid=userid, content=text)
    if as_json:
        _echo_json(result)
    elif result.get("reply") is not None:
        click.echo(result["reply"])
        click.echo(f"({_who(names, userid)}; answered in {result.get('elapsed_ms', 0):.0f} ms)")
    else:
        status = result.get("status")
        click.echo(f"{_who(names, userid)} messaged the app; scrm answered HTTP {status} with no reply")
    status = result.get("status")
    if isinstance(status, int) and status >= 400:
        click.echo(f"Error: scrm answered the message with HTTP {status}", err=True)
        sys.exit(1)


def _describe_faults(faults: dict[str, Any]) -> str:
    parts = []
    rate = float(faults.get("error_rate") or 0)
    if rate:
        codes = ", ".join(str(c) for c in faults.get("errcodes") or [-1])
        parts.append(f"{rate:.0%} of calls fail with {codes}")
    if faults.get("latency_ms"):
        parts.append(f"+{faults['latency_ms']:g} ms latency")
    if faults.get("forced"):
        parts.append(f"{len(faults['forced'])} forced failure(s) queued")
    if rate and "timeout" in (faults.get("errcodes") or []):
        parts.append(f"timeouts held {faults.get('timeout_hold_ms', DEFAULT_TIMEOUT_HOLD_MS):g} ms")
    return "faults: " + ("; ".join(parts) if parts else "off")


_ERRCODE_CHOICES = [str(c) for c in FAULT_ERRCODES]


@sandbox.command("faults")
@click.option(
    "--error-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Share of WeCom calls (gettoken excepted) that fail, 0..1.",
)
@click.option(
    "--errcode",
    "errcodes",
    multiple=True,
    type=click.Choice(_ERRCODE_CHOICES),
    help="What a failing call answers; repeatable (default -1). 'timeout' applies the call but holds the "
    "answer past the client's timeout.",
)
@click.option("--latency-ms", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--timeout-hold-ms",
    type=click.IntRange(min=0),
    default=DEFAULT_TIMEOUT_HOLD_MS,
    show_default=True,
    help="How long a 'timeout' holds its answer; keep it above scrm's WECOM_TIMEOUT_S.",
)
@click.option("--show", is_flag=True, help="Only print the current faults.")
@JSON_OPTION
def sandbox_faults(
    error_rate: float,
    errcodes: tuple[str, ...],
    latency_ms: int,
    timeout_hold_ms: int,
    show: bool,
    as_json: bool,
) -> None:
    """Set the sandbox's faults to exactly these (no options: faults off)."""
    target = _target()
    if show:
        faults = target.request("GET", "faults")
    else:
        if errcodes and not error_rate:
            _fail("--errcode picks what failing calls answer; give --error-rate too (e.g. --error-rate 0.2)")
        knobs = {
            "replace": True,
            "error_rate": error_rate,
            "errcodes": [c if c == "timeout" else int(c) for c in errcodes] or [-1],
            "latency_ms": latency_ms,
            "timeout_hold_ms": timeout_hold_ms,
        }
        faults = target.request("POST", "faults", knobs)
    if as_json:
        _echo_json(faults)
    else:
        click.echo(_describe_faults(faults))


@sandbox.command("chat")
@click.option("--from", "sender", required=True, help="Who writes: a customer (wm…/wo…) or a rep's userid.")
@click.option("--to", "to", required=True, help="Who reads it: the rep's userid or the customer's id.")
@click.option("--no-callback", is_flag=True, help="Only archive it: no msgaudit_notify (the tick pulls it).")
@click.argument("content")
@JSON_OPTION
def sandbox_chat(sender: str, to: str, no_callback: bool, content: str, as_json: bool) -> None:
    """A 1:1 message into the chat archive (会话存档), then msgaudit_notify unless --no-callback."""
    target = _target()
    if no_callback:
        payload = {"from": sender, "tolist": [to], "content": content}
        message = target.request("POST", "msgaudit", payload)["result"]
        if as_json:
            _echo_json(message)
        else:
            click.echo(f"archived {message['msgid']} (seq {message['seq']}); no callback: --no-callback")
        return
    result, names = target.drive("chat", sender=sender, to=to, content=content)
    summary = f"{_who(names, sender)} → {_who(names, to)}: archived {result['msgid']}, msgaudit_notify sent"
    _report(result, summary, as_json)
