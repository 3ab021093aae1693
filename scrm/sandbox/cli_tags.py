"""``scrm sandbox tags …``: change the corp tag library "in WeCom" (as an admin would in WeCom's
console) and print it as get_corp_tag_list answers.

Each change sends the change_external_tag callbacks WeCom would (doc 92130): one ``create`` per
created group or tag, ``update`` for a rename or a new order, ``delete``, and one ``shuffle`` for
a reorder by drag (with the group's id, or an empty Id when the groups themselves were
reordered). ``--no-callback`` makes the change without its event: a callback WeCom never
delivered, which scrm's nightly reconcile (``scrm reconcile``) heals.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from scrm.sandbox.cli import JSON_OPTION, _echo_json, _target

NO_CALLBACK = click.option(
    "--no-callback",
    "no_callback",
    is_flag=True,
    help="Change the library without sending its event (one WeCom never delivers).",
)


def _done(results: Any, summary: str, as_json: bool, no_callback: bool) -> None:
    """Print what changed and what scrm answered each callback; a refused callback exits 1."""
    deliveries = [r for r in (results if isinstance(results, list) else [results]) if r]
    if as_json:
        _echo_json({"callbacks": deliveries})
    elif no_callback:
        click.echo(f"{summary}; no callback sent (--no-callback): run `scrm reconcile` to heal")
    else:
        statuses = ", ".join(str(d.get("status")) for d in deliveries) or "none"
        click.echo(f"{summary}; {len(deliveries)} callback(s), scrm answered HTTP {statuses}")
    bad = [d for d in deliveries if isinstance(d.get("status"), int) and d["status"] >= 400]
    if bad:
        click.echo(f"Error: scrm answered a callback with HTTP {bad[0]['status']}", err=True)
        sys.exit(1)


@click.group("tags")
def tags() -> None:
    """The corp tag library in the sandbox: list, create, rename, reorder, shuffle, delete."""


@tags.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print get_corp_tag_list's answer as JSON.")
def tags_list(as_json: bool) -> None:
    """The library as get_corp_tag_list answers it (groups and tags with ids and orders)."""
    data = _target().request("GET", "tags")
    answer = {k: data[k] for k in ("errcode", "errmsg", "tag_group") if k in data}
    if as_json:
        _echo_json(answer)
        return
    groups = answer.get("tag_group") or []
    if not groups:
        click.echo("no tag groups")
    for g in sorted(groups, key=lambda g: -int(g["order"])):
        click.echo(f"{g['group_name']}  [{g['group_id']}] order {g['order']}")
        for t in sorted(g["tag"], key=lambda t: -int(t["order"])):
            click.echo(f"  - {t['name']}  [{t['id']}] order {t['order']}")


@tags.command("create")
@click.option("--group", "group_name", required=True, help="The group's name (created when new).")
@click.option("--order", type=int, default=0, show_default=True, help="A new group's order.")
@click.argument("names", nargs=-1, required=True)
@NO_CALLBACK
@JSON_OPTION
def tags_create(
    group_name: str, order: int, names: tuple[str, ...], no_callback: bool, as_json: bool
) -> None:
    """Create tags NAMES in a group (the group too when new), all in the same second."""
    results, _ = _target().drive(
        "create_tag_group", group_name=group_name, tags=list(names), order=order, callback=not no_callback
    )
    _done(results, f"created {len(names)} tag(s) in {group_name}", as_json, no_callback)


@tags.command("rename")
@click.argument("id")
@click.argument("name")
@NO_CALLBACK
@JSON_OPTION
def tags_rename(id: str, name: str, no_callback: bool, as_json: bool) -> None:
    """Rename the tag or group ID."""
    results, _ = _target().drive("rename_tag", id=id, name=name, callback=not no_callback)
    _done(results, f"renamed {id} to {name}", as_json, no_callback)


@tags.command("reorder")
@click.argument("id")
@click.argument("order", type=int)
@NO_CALLBACK
@JSON_OPTION
def tags_reorder(id: str, order: int, no_callback: bool, as_json: bool) -> None:
    """Give the tag or group ID a new order (larger comes first)."""
    results, _ = _target().drive("reorder_tag", id=id, order=order, callback=not no_callback)
    _done(results, f"{id} now has order {order}", as_json, no_callback)


@tags.command("shuffle")
@click.option("--group", "group_id", default="", help="Reorder this group's tags (default: the groups).")
@click.argument("ids", nargs=-1)
@NO_CALLBACK
@JSON_OPTION
def tags_shuffle(group_id: str, ids: tuple[str, ...], no_callback: bool, as_json: bool) -> None:
    """Reorder by drag: the group's tags, or every group; IDS in the new order (default reversed)."""
    results, _ = _target().drive(
        "shuffle_tags", group_id=group_id, ids=list(ids) or None, callback=not no_callback
    )
    what = f"the tags of {group_id}" if group_id else "the groups"
    _done(results, f"shuffled {what}", as_json, no_callback)


@tags.command("delete")
@click.argument("id")
@NO_CALLBACK
@JSON_OPTION
def tags_delete(id: str, no_callback: bool, as_json: bool) -> None:
    """Delete the tag or group ID (a group's last tag takes the group with it)."""
    results, _ = _target().drive("delete_tag", id=id, callback=not no_callback)
    _done(results, f"deleted {id}", as_json, no_callback)
