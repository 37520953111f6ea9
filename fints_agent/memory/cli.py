"""``fints-agent memory ...``: inspect and manage a trajectory store from the command line.

None of these commands loads a model: they read and write the store only.

Examples:
    fints-agent memory stats --store ./memory
    fints-agent memory list alice --store http://127.0.0.1:8000 --limit 20
    fints-agent memory export alice alice.jsonl            # --force overwrites a file
    fints-agent memory import alice.jsonl                  # into alice, all or nothing
    fints-agent memory import alice.jsonl --as-user alice-copy
    fints-agent memory forget alice --yes
    fints-agent memory delete alice 3f2c9a...
    fints-agent memory recover --store ./memory

An export file starts with a header line (user, trajectory count, model layout and the SHA-256
of the lines after it); ``import`` checks all of it before writing anything, and refuses files
of older versions, which have no checksum, unless given ``--allow-unchecked``.

``--store`` defaults to ``$FINTS_MEMORY_STORE``, else ``memory`` under the user cache directory
(the chat model's default). The same functions run standalone:
``python -m fints_agent.memory.cli stats``.

A Chroma server with token authentication takes its token from ``$FINTS_AGENT_CHROMA_TOKEN`` (or
``--token``); one with basic authentication takes ``--store http://USER:PASSWORD@host:port``.
``--tenant`` and ``--database`` choose where on the server the store lives. A refused token
exits with code 2 and says so; the token is never printed.

An embedded store (a directory) is open in one process at a time: while an agent has it open,
these commands refuse it (exit code 2, naming the process that holds it). To inspect or manage a
store an agent is using, put it on a Chroma server (``chroma run --path DIR``) and give both its
URL. ``recover`` never touches an operation whose writer is still running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["STORE_ENV", "add_memory_commands", "default_store", "main"]

STORE_ENV = "FINTS_MEMORY_STORE"
"""Environment variable naming the default store (a directory or a server URL)."""


def default_store() -> str:
    """``$FINTS_MEMORY_STORE``, else ``memory`` under the user cache directory."""
    env = os.environ.get(STORE_ENV)
    if env:
        return env
    from fints_agent.paths import cache_dir

    return str(cache_dir() / "memory")


def _open(args: argparse.Namespace, *, must_exist: bool = True) -> Any:
    from fints_agent.memory.errors import StoreError
    from fints_agent.memory.store import TrajectoryStore

    location = args.store or default_store()
    if must_exist and "://" not in location and not os.path.isdir(location):
        raise StoreError(f"no store at {location} (give --store PATH_OR_URL)")
    return TrajectoryStore(
        location,
        collection_prefix=args.prefix,
        token=args.token,
        tenant=args.tenant,
        database=args.database,
    )


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False) if args.json else text)


def _cmd_stats(args: argparse.Namespace) -> int:
    store = _open(args)
    stats = store.stats(per_user=args.per_user)
    lines = [
        f"store:        {stats['location']} (prefix {stats['collection_prefix']!r})",
        f"users:        {stats['users']}",
        f"trajectories: {stats['trajectories']}",
    ]
    layout = stats["layout"]
    if layout:
        lines += [
            f"model:        {layout['model_fingerprint']} (d_model {layout['d_model']})",
            f"layers:       {len(layout['layers'])} {layout['layers']}",
            f"sites:        {', '.join(layout['sites'])}",
            f"embedder:     {layout['embedder']} ({layout['embed_dim']} dims)",
        ]
    for user, n in sorted((stats.get("per_user") or {}).items()):
        lines.append(f"  {user}: {n}")
    _print(args, stats, "\n".join(lines))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    store = _open(args)
    records = store.get(args.user, include_superseded=not args.current, limit=args.limit)
    rows = [r.summary() for r in records]
    lines = []
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at))
        call = json.dumps(r.chosen, ensure_ascii=False)
        mark = f"  [superseded by {r.superseded_by}]" if r.superseded_by else ""
        lines.append(f"{r.id}  #{r.seq}  {when}  {r.request!r} -> {call}{mark}")
    if not records:
        lines.append(f"no trajectories for user {args.user!r}")
    _print(args, rows, "\n".join(lines))
    return 0


def _cmd_forget(args: argparse.Namespace) -> int:
    store = _open(args)
    n = store.count(args.user)
    if not args.yes:
        if not sys.stdin.isatty():
            print("refusing to forget without --yes (not a terminal)", file=sys.stderr)
            return 2
        answer = input(f"forget user {args.user!r} ({n} trajectories)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    removed = store.delete_user(args.user)
    _print(args, {"user_id": args.user, "deleted": removed}, f"forgot {args.user!r}: {removed}")
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    store = _open(args)
    removed = store.delete(args.user, args.ids)
    _print(args, {"user_id": args.user, "deleted": removed}, f"deleted {removed} trajectories")
    return 0 if removed == len(set(args.ids)) else 1


def _cmd_export(args: argparse.Namespace) -> int:
    store = _open(args)
    n = store.export_user(args.user, args.path, force=args.force)
    _print(
        args,
        {"user_id": args.user, "exported": n, "path": args.path},
        f"exported {n} trajectories of {args.user!r} to {args.path}",
    )
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    store = _open(args, must_exist=False)
    n = store.import_user(args.path, as_user=args.as_user, allow_unchecked=args.allow_unchecked)
    _print(args, {"imported": n, "path": args.path}, f"imported {n} trajectories from {args.path}")
    return 0


def _cmd_recover(args: argparse.Namespace) -> int:
    store = _open(args)
    report = store.recover(grace_seconds=args.grace, full=args.full)
    data = dict(vars(report))
    _print(args, data, ", ".join(f"{k}: {v}" for k, v in data.items()))
    return 0


def _guard(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from fints_agent.memory.errors import StoreError

        try:
            return handler(args)
        except StoreError as exc:
            print(f"fints-agent memory: error: {exc}", file=sys.stderr)
            return 2

    run.__doc__ = handler.__doc__
    return run


def add_memory_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``memory {stats,list,forget,delete,export,import,recover}``.

    Each command sets ``func``: call ``args.func(args)``, which returns an exit code.

    Args:
        subparsers: The object ``ArgumentParser.add_subparsers()`` returned.

    Returns:
        The ``memory`` parser.

    Example:
        >>> parser = argparse.ArgumentParser(prog="fints-agent")
        >>> add_memory_commands(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["memory", "stats", "--store", "./memory"])
        >>> args.func(args)
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        default=None,
        metavar="PATH_OR_URL",
        help=f"store directory or Chroma server URL (default: ${STORE_ENV} or the user cache)",
    )
    common.add_argument("--prefix", default="fints", help="collection prefix (default: fints)")
    common.add_argument(
        "--token",
        default=None,
        help="token of a Chroma server with token authentication (default: "
        "$FINTS_AGENT_CHROMA_TOKEN, which keeps it out of the process list); a server with "
        "basic authentication takes http://USER:PASSWORD@host:port as --store",
    )
    common.add_argument("--tenant", default=None, help="Chroma tenant (default: default_tenant)")
    common.add_argument(
        "--database", default=None, help="Chroma database (default: default_database)"
    )
    common.add_argument("--json", action="store_true", help="print JSON")

    memory = subparsers.add_parser(
        "memory",
        help="inspect and manage the trajectory memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = memory.add_subparsers(dest="memory_command", required=True)

    p = sub.add_parser("stats", parents=[common], help="users, trajectories, model and layers")
    p.add_argument("--per-user", action="store_true", help="also count per user")
    p.set_defaults(func=_guard(_cmd_stats))

    p = sub.add_parser("list", parents=[common], help="a user's trajectories, oldest first")
    p.add_argument("user")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--current", action="store_true", help="leave out superseded ones")
    p.set_defaults(func=_guard(_cmd_list))

    p = sub.add_parser("forget", parents=[common], help="delete everything of a user")
    p.add_argument("user")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=_guard(_cmd_forget))

    p = sub.add_parser("delete", parents=[common], help="delete some trajectories of a user")
    p.add_argument("user")
    p.add_argument("ids", nargs="+", metavar="TRAJECTORY_ID")
    p.set_defaults(func=_guard(_cmd_delete))

    p = sub.add_parser("export", parents=[common], help="write a user's memory to JSON Lines")
    p.add_argument("user")
    p.add_argument("path")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=_guard(_cmd_export))

    p = sub.add_parser(
        "import",
        parents=[common],
        help="add an exported memory (all or nothing)",
        description=(
            "Add the trajectories of an export file to the user its header names (or to "
            "--as-user, under fresh ids). The whole file is checked first: every record must "
            "belong to the header's user, the trajectory count and the checksum must match, "
            "vectors must be finite, and no id may belong to another user of the store; any "
            "failure imports nothing."
        ),
    )
    p.add_argument("path")
    p.add_argument("--as-user", default=None, help="import under this user id (fresh ids)")
    p.add_argument(
        "--allow-unchecked",
        action="store_true",
        help="accept an export of an older version, which has no checksum",
    )
    p.set_defaults(func=_guard(_cmd_import))

    p = sub.add_parser("recover", parents=[common], help="finish operations a crash interrupted")
    p.add_argument(
        "--grace",
        type=float,
        default=0.0,
        help="also skip operations younger than this many seconds (operations of a writer "
        "still running are always skipped)",
    )
    p.add_argument("--full", action="store_true", help="also cross-check every user")
    p.set_defaults(func=_guard(_cmd_recover))
    return memory


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``memory`` commands standalone (``python -m fints_agent.memory.cli stats``)."""
    parser = argparse.ArgumentParser(prog="fints-agent")
    add_memory_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["memory", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as exc:
        print(f"fints-agent memory: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
