"""The `oncall-bot` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timedelta, timezone

from bot.config import ConfigError, OncallConfig, load_settings

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bot.logs import configure_logging
    from commands.server import build, create_app

    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"oncall-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        app = create_app(build(settings))
    except ConfigError as exc:  # runbooks that fail lint, an unreadable KUBECONFIG, ...
        print(f"oncall-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, proxy_headers=True)
    return 0


def _config_schema(_: argparse.Namespace) -> int:
    print(json.dumps(OncallConfig.model_json_schema(), indent=2))
    return 0


def _config_check(args: argparse.Namespace) -> int:
    from bot.config import load_config_file

    try:
        load_config_file(args.file)
    except ConfigError as exc:
        print(f"oncall-bot: {exc}", file=sys.stderr)
        return 1
    print(f"{args.file}: ok")
    return 0


# -- runbook -----------------------------------------------------------------------------------------

def _runbook_lint(args: argparse.Namespace) -> int:
    from bot.runbooks import SHIPPED_DIR, lint

    paths = [*args.paths, *([SHIPPED_DIR] if args.shipped else [])]
    if not paths:
        print("oncall-bot: name runbook files or directories, or --shipped", file=sys.stderr)
        return 2
    problems = lint(paths)
    for problem in problems:
        print(problem)
    errors = [p for p in problems if p.severity == "error" or args.strict]
    if not problems:
        print(f"{_count_runbooks(paths)} runbooks ok")
    return 1 if errors else 0


def _count_runbooks(paths: list) -> int:  # type: ignore[type-arg]
    from bot.runbooks import load_runbooks

    return len(load_runbooks(paths, include_shipped=False))


def _runbook_schema(_: argparse.Namespace) -> int:
    from bot.runbooks import runbook_schema

    print(json.dumps(runbook_schema(), indent=2, ensure_ascii=False))
    return 0


def _runbook_render(args: argparse.Namespace) -> int:
    """The Block Kit the bot would post for this alert: paste into Slack's Block Kit Builder."""
    from bot.runbooks import RunbookError, load_runbooks, prepare_steps
    from commands.runbook_blocks import runbook_messages

    try:
        runbooks = load_runbooks([args.file], include_shipped=False)
        labels, annotations = _alert_file(args.alert)
    except RunbookError as exc:
        print("\n".join(map(str, exc.problems)), file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"oncall-bot: {args.alert}: {exc}", file=sys.stderr)
        return 2
    runbook = runbooks.get(args.runbook) if args.runbook else runbooks.best_match(labels)
    if runbook is None:
        which = f"no runbook {args.runbook!r}" if args.runbook else f"no runbook matches {labels.get('alertname', '?')!r}"
        print(f"oncall-bot: {args.file}: {which}", file=sys.stderr)
        return 1
    try:
        policy = _runbook_policy()
    except ConfigError as exc:
        print(f"oncall-bot: {exc}", file=sys.stderr)
        return 2
    prepared = prepare_steps(runbook, labels, annotations, [*policy.namespaces, *args.namespace],
                             allowed_urls=[*policy.urls, *args.url])
    messages = runbook_messages(runbook, prepared, locale=args.locale, button_id=lambda i: f"step-{i}",
                                runbook_url=annotations.get("runbook_url"))
    rendered = [{"blocks": blocks} for blocks in messages]
    print(json.dumps(rendered[0] if len(rendered) == 1 else rendered, indent=2, ensure_ascii=False))
    return 0


def _runbook_policy():  # type: ignore[no-untyped-def]
    """The allow-lists of ONCALL_CONFIG when it is set, as the bot would apply them."""
    from bot.config import load_config_file

    path = os.environ.get("ONCALL_CONFIG")
    return (load_config_file(path) if path else OncallConfig()).runbooks


def _alert_file(path: str) -> tuple[dict[str, str], dict[str, str]]:
    """An Alertmanager webhook (its first alert, completed by the common labels) or one alert."""
    from pydantic import ValidationError

    from integrations.alertmanager import WebhookMessage

    try:
        raw = json.loads(open(path, encoding="utf-8").read())
    except OSError as exc:
        raise ValueError(f"cannot read the file ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if isinstance(raw, dict) and "alerts" in raw:
        try:
            message = WebhookMessage.model_validate(raw)
        except ValidationError as exc:
            raise ValueError(f"not an Alertmanager webhook: {exc.errors()[0]['msg']}") from exc
        first = message.alerts[0] if message.alerts else None
        return ({**(first.labels if first else {}), **message.common_labels},
                {**(first.annotations if first else {}), **message.common_annotations})
    if isinstance(raw, dict) and isinstance(raw.get("labels"), dict):
        return ({str(k): str(v) for k, v in raw["labels"].items()},
                {str(k): str(v) for k, v in (raw.get("annotations") or {}).items()})
    raise ValueError('expected an Alertmanager webhook or an alert {"labels": {...}, "annotations": {...}}')


# -- maintenance -------------------------------------------------------------------------------------

def _database():  # type: ignore[no-untyped-def]
    from bot.db import Database

    db = Database(os.environ.get("DATABASE_URL") or "sqlite:///oncall.db")
    db.migrate()
    return db


def _when(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; write e.g. 2026-12-01T02:00:00Z")
    return value


def _maintenance_add(args: argparse.Namespace) -> int:
    from bot.escalation import add_maintenance
    from bot.escalation_policy import check_regexes

    try:
        start = _when(args.start) if args.start else datetime.now(timezone.utc)
        end = _when(args.end) if args.end else start + _duration(args.duration)
        match = dict(pair.split("=", 1) for pair in args.match)
        check_regexes(match)
        if end <= start:
            raise ValueError("the window must end after it starts")
    except ValueError as exc:
        print(f"oncall-bot: {exc}", file=sys.stderr)
        return 2
    db = _database()
    with db.session() as session:
        window = add_maintenance(session, args.name, match, start, end, f"cli:{os.environ.get('USER', '?')}")
        session.flush()
        window_id = window.id
    print(f"maintenance window {window_id} '{args.name}': {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC, "
          f"match {match or 'every incident'}")
    return 0


def _duration(text: str | None) -> timedelta:
    from bot.actions import parse_duration

    if not text:
        raise ValueError("give --end or --for (e.g. --for 2h)")
    return parse_duration(text)


def _maintenance_list(_: argparse.Namespace) -> int:
    from sqlalchemy import select

    from bot.escalation import MaintenanceWindow

    now = datetime.now(timezone.utc)
    with _database().read() as session:
        windows = session.scalars(select(MaintenanceWindow).where(
            MaintenanceWindow.ends_at > now, MaintenanceWindow.cancelled_at.is_(None))  # type: ignore[arg-type,union-attr]
            .order_by(MaintenanceWindow.starts_at)).all()  # type: ignore[arg-type]
    for w in windows:
        state = "active" if w.starts_at <= now else "upcoming"
        print(f"{w.id}\t{state}\t{w.name}\t{json.dumps(w.match)}\t{w.starts_at:%Y-%m-%d %H:%M}\t"
              f"{w.ends_at:%Y-%m-%d %H:%M}\t{w.created_by}")
    if not windows:
        print("no active or upcoming maintenance windows (config windows: see ONCALL_CONFIG)")
    return 0


def _maintenance_cancel(args: argparse.Namespace) -> int:
    from bot.escalation import MaintenanceWindow

    with _database().session() as session:
        window = session.get(MaintenanceWindow, args.id)
        if window is None or window.cancelled_at is not None:
            print(f"oncall-bot: no maintenance window {args.id} to cancel (see `oncall-bot maintenance list`)",
                  file=sys.stderr)
            return 1
        window.cancelled_at = datetime.now(timezone.utc)
    print(f"maintenance window {args.id} cancelled")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="oncall-bot", description="ChatOps for on-call engineers")
    sub = root.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the bot (Slack events, Alertmanager webhook, health, metrics)")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=3000)
    serve.set_defaults(run=_serve)
    config = sub.add_parser("config", help="the ONCALL_CONFIG file").add_subparsers(dest="what", required=True)
    config.add_parser("schema", help="print the JSON Schema of the config file").set_defaults(run=_config_schema)
    check = config.add_parser("check", help="validate a config file")
    check.add_argument("file")
    check.set_defaults(run=_config_check)

    runbook = sub.add_parser("runbook", help="runbook files").add_subparsers(dest="what", required=True)
    lint = runbook.add_parser("lint", help="check runbook files: file:line: message, exit 1 on errors")
    lint.add_argument("paths", nargs="*", help="files or directories (*.yaml, *.yml)")
    lint.add_argument("--shipped", action="store_true", help="also the runbooks shipped with the bot")
    lint.add_argument("--strict", action="store_true", help="warnings fail too")
    lint.set_defaults(run=_runbook_lint)
    runbook.add_parser("schema", help="print the JSON Schema of a runbook").set_defaults(run=_runbook_schema)
    render = runbook.add_parser("render", help="print the Block Kit the bot would post for an alert")
    render.add_argument("file")
    render.add_argument("--alert", required=True, help="an Alertmanager webhook JSON, or one alert's JSON")
    render.add_argument("--locale", default="en", help="en, ja, ...")
    render.add_argument("--runbook", help="the runbook id, when the file holds several")
    render.add_argument("--namespace", action="append", default=[],
                        help="allow this namespace, as the bot's config would (repeatable; ONCALL_CONFIG's count too)")
    render.add_argument("--url", action="append", default=[], help="allow this URL prefix for http.check")
    render.set_defaults(run=_runbook_render)

    maintenance = sub.add_parser("maintenance", help="maintenance windows: nothing pages inside one") \
        .add_subparsers(dest="what", required=True)
    add = maintenance.add_parser("add", help="declare a window (DATABASE_URL)")
    add.add_argument("--name", required=True)
    add.add_argument("--start", help="ISO time with a zone (default: now)")
    add.add_argument("--end", help="ISO time with a zone")
    add.add_argument("--for", dest="duration", help="instead of --end: 30m, 2h, 1d")
    add.add_argument("--match", action="append", default=[], metavar="LABEL=REGEX",
                     help="only incidents whose labels match (repeatable; none: every incident)")
    add.set_defaults(run=_maintenance_add)
    maintenance.add_parser("list", help="active and upcoming windows").set_defaults(run=_maintenance_list)
    cancel = maintenance.add_parser("cancel", help="end a window now")
    cancel.add_argument("id", type=int)
    cancel.set_defaults(run=_maintenance_cancel)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
