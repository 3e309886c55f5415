"""The `oncall-bot` command."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import ConfigError, OncallConfig, load_settings

if TYPE_CHECKING:
    from bot.audit import Anchor
    from bot.db import Database
    from bot.runbook_lint import LintProblem

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bot.db import DatabaseUnavailable
    from bot.logs import configure_logging
    from commands.app import build, create_app

    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    try:
        settings = load_settings()
    except ConfigError as exc:
        _print_config_error(exc)
        return 2
    try:
        _check_database(settings.database_url)
    except DatabaseUnavailable as exc:
        print(f"oncall-bot: {exc}", file=sys.stderr)
        return 2
    try:
        app = create_app(build(settings))
    except ConfigError as exc:  # runbooks that fail lint, an unreadable KUBECONFIG, ...
        _print_config_error(exc)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, proxy_headers=True)
    return 0


def _print_config_error(exc: ConfigError) -> None:
    # The file's problems as `FILE:LINE: path: message`, one a line, as compilers print them.
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    print(f"oncall-bot: configuration error: {exc.summary}", file=sys.stderr)


def _check_database(url: str) -> None:
    """Before anything starts: an unreachable database is one line naming DATABASE_URL, not a traceback."""
    from bot.db import Database

    db = Database(url)
    try:
        db.check_connection()
    finally:
        db.dispose()


def _config_schema(_: argparse.Namespace) -> int:
    print(json.dumps(OncallConfig.model_json_schema(), indent=2))
    return 0


def _config_check(args: argparse.Namespace) -> int:
    from bot.config import load_config_file

    try:
        load_config_file(args.file)
    except ConfigError as exc:
        _print_config_error(exc)
        return 1
    print(f"{args.file}: ok")
    return 0


# -- runbook -----------------------------------------------------------------------------------------

def _problem_line(problem: LintProblem) -> str:
    # `file:line: severity: message`, as compilers print it: editors and CI annotators link it.
    return f"{problem.file}:{problem.line}: {problem.severity}: {problem.message}"


def _runbook_lint(args: argparse.Namespace) -> int:
    from bot.runbook_lint import lint
    from bot.runbooks import SHIPPED_DIR, load_runbooks

    if not args.paths and not args.shipped:
        print("oncall-bot: name runbook files or directories, or --shipped", file=sys.stderr)
        return 2
    # The shipped runbooks are checked on their own, as the bot loads them: a team runbook that
    # overrides or out-ranks a shipped one is not a clash.
    groups = [group for group in (args.paths, [SHIPPED_DIR] if args.shipped else []) if group]
    problems = [problem for group in groups for problem in lint(group)]
    for problem in problems:
        print(_problem_line(problem))
    if any(p.severity == "error" or args.strict for p in problems):
        return 1
    count = sum(len(load_runbooks(group, include_shipped=False)) for group in groups)
    if count == 0:  # a CI job pointed at the wrong directory must not pass
        print(f"oncall-bot: no runbooks (*.yaml, *.yml) in {', '.join(args.paths)}", file=sys.stderr)
        return 1
    warnings = f", {len(problems)} warning{'s' if len(problems) > 1 else ''}" if problems else ""
    print(f"{count} runbook{'s' if count != 1 else ''} ok{warnings}")
    return 0


def _runbook_schema(_: argparse.Namespace) -> int:
    from bot.runbook_format import runbook_schema

    print(json.dumps(runbook_schema(), indent=2, ensure_ascii=False))
    return 0


def _runbook_render(args: argparse.Namespace) -> int:
    """The Block Kit the bot would post for this alert: paste into Slack's Block Kit Builder."""
    from bot.runbooks import RunbookError, load_runbooks, prepare_steps
    from commands.runbook_blocks import runbook_messages

    try:
        runbooks = load_runbooks([args.file], include_shipped=False)
    except RunbookError as exc:
        print("\n".join(map(_problem_line, exc.problems)), file=sys.stderr)
        return 1
    for warning in runbooks.warnings:
        print(_problem_line(warning), file=sys.stderr)
    try:
        labels, annotations = _alert_file(args.alert)
    except ValueError as exc:
        print(f"oncall-bot: {args.alert}: {exc}", file=sys.stderr)
        return 2
    runbook = runbooks.get(args.runbook) if args.runbook else runbooks.best_match(labels)
    if runbook is None:
        which = (f"no runbook {args.runbook!r} (it has {', '.join(rb.id for rb in runbooks) or 'none'})"
                 if args.runbook else f"no runbook matches alertname {labels.get('alertname', '')!r} and its labels")
        print(f"oncall-bot: {args.file}: {which}", file=sys.stderr)
        return 1
    # Config-free: only the runbook's own allow-lists, so the output depends on these two files
    # alone. A step the bot's config would enable shows disabled, with the reason.
    prepared = prepare_steps(runbook, labels, annotations)
    # The bot puts a per-incident token in each button's value; a placeholder stands in here.
    messages = runbook_messages(runbook, prepared, locale=args.locale, button_id=lambda i: f"step-{i}",
                                runbook_url=annotations.get("runbook_url"))
    rendered = [{"blocks": blocks} for blocks in messages]
    print(json.dumps(rendered[0] if len(rendered) == 1 else rendered, indent=2, ensure_ascii=False))
    return 0


def _alert_file(path: str) -> tuple[dict[str, str], dict[str, str]]:
    """The labels and annotations of an Alertmanager webhook (v4) or of one alert."""
    from pydantic import ValidationError

    from integrations.alertmanager import WebhookMessage

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the file ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ValueError("not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if isinstance(raw, dict) and "alerts" in raw:
        try:
            message = WebhookMessage.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(map(str, error["loc"]))
            raise ValueError(f"not an Alertmanager webhook v4: {where}: {error['msg']}") from exc
        # As the bot does (bot.incidents, bot.steps): the group's common labels and annotations,
        # completed by its first firing alert's (common labels often lack the pod).
        first = next((a for a in message.alerts if a.status == "firing"), message.alerts[0])
        return ({**first.labels, **message.common_labels}, {**first.annotations, **message.common_annotations})
    if isinstance(raw, dict) and isinstance(raw.get("labels"), dict) \
            and isinstance(raw.get("annotations") or {}, dict):
        return ({str(k): str(v) for k, v in raw["labels"].items()},
                {str(k): str(v) for k, v in (raw.get("annotations") or {}).items()})
    raise ValueError('expected an Alertmanager webhook or one alert {"labels": {...}, "annotations": {...}}')


# -- maintenance -------------------------------------------------------------------------------------

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_EXAMPLE_TIME = "2026-12-01T02:00:00Z"


def _on_database(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command that uses DATABASE_URL; a database it cannot use is named, with the fix."""
    def run(args: argparse.Namespace) -> int:
        from sqlalchemy.exc import SQLAlchemyError

        from bot.db import DatabaseUnavailable

        try:
            return command(args)
        except DatabaseUnavailable as exc:
            print(f"oncall-bot: {exc}", file=sys.stderr)
            return 2
        except SQLAlchemyError as exc:
            from bot.db import shown_url

            cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            print(f"oncall-bot: DATABASE_URL={shown_url(_database_url())}: failed: {cause}; check DATABASE_URL "
                  "(sqlite:///path.db or postgresql://user:password@host/db)", file=sys.stderr)
            return 2
    return run


def _database_url() -> str:
    return os.environ.get("DATABASE_URL") or "sqlite:///oncall.db"


@contextmanager
def _database() -> Iterator[Database]:
    """The bot's existing database: never created or migrated from the CLI (bot.db.Database.existing)."""
    from bot.db import Database, shown_url, sqlite_path

    url = _database_url()
    db = Database.existing(url)
    path = sqlite_path(db.url)
    details = [str(path)] if path else []
    if not os.environ.get("DATABASE_URL"):
        details.append("DATABASE_URL is not set")
    print(f"oncall-bot: using the database {shown_url(url)}{' (' + '; '.join(details) + ')' if details else ''}",
          file=sys.stderr)
    try:
        yield db
    finally:
        db.dispose()


def _when(option: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)  # Python 3.11+ reads a trailing Z
    except ValueError:
        raise ValueError(f"{option} {text!r} is not an ISO 8601 time; write e.g. {_EXAMPLE_TIME}") from None
    if value.tzinfo is None:
        raise ValueError(f"{option} {text!r} has no time zone; write e.g. {_EXAMPLE_TIME} or ...+09:00")
    return value.astimezone(UTC)


def _matchers(pairs: list[str]) -> dict[str, str]:
    from bot.escalation_policy import check_regexes

    match: dict[str, str] = {}
    for pair in pairs:
        label, equals, regex = pair.partition("=")
        if not equals or not _LABEL_NAME.fullmatch(label):
            raise ValueError(f"--match {pair!r}: write LABEL=REGEX with a label name, e.g. --match service=db|redis")
        if label in match:
            raise ValueError(f"--match names {label!r} twice; join the regexes with |")
        match[label] = regex
    return check_regexes(match)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _maintenance_add(args: argparse.Namespace) -> int:
    from bot.escalation import add_maintenance
    from bot.param_syntax import parse_duration

    now = datetime.now(UTC)
    try:
        if not args.name.strip() or len(args.name) > 128:
            raise ValueError("--name must be 1 to 128 characters")
        start = _when("--start", args.start) if args.start else now
        end = _when("--end", args.end) if args.end else start + parse_duration(args.duration)
        match = _matchers(args.match)
        if end <= start:
            raise ValueError(f"the window must end after it starts ({_utc(start)})")
        if end <= now:  # most likely a wrong date or time zone
            raise ValueError(f"the window would end in the past ({_utc(end)})")
    except ValueError as exc:
        print(f"oncall-bot: {exc}", file=sys.stderr)
        return 2
    created_by = f"cli:{os.environ.get('USER') or 'unknown'}"[:64]
    with _database() as db, db.session() as session:
        window = add_maintenance(session, args.name, match, start, end, created_by, now=now)
        session.flush()
        window_id = window.id
    print(f"maintenance window {window_id} added: {args.name!r} {_utc(start)} to {_utc(end)}, "
          f"{'match ' + json.dumps(match) if match else 'every incident'}")
    return 0


def _maintenance_list(_: argparse.Namespace) -> int:
    from sqlalchemy import select

    from bot.models import MaintenanceWindow

    now = datetime.now(UTC)
    with _database() as db, db.read() as session:
        query = select(MaintenanceWindow).where(
            MaintenanceWindow.ends_at > now,  # type: ignore[arg-type]
            MaintenanceWindow.cancelled_at.is_(None))  # type: ignore[union-attr]
        ordered = query.order_by(MaintenanceWindow.starts_at, MaintenanceWindow.id)  # type: ignore[arg-type]
        windows = session.scalars(ordered).all()
    if not windows:
        print("no active or upcoming maintenance windows (windows in ONCALL_CONFIG are not listed here)")
        return 0
    print("id\tstate\tname\tmatch\tstart\tend\tcreated_by")
    for w in windows:
        state = "active" if w.starts_at <= now else "upcoming"
        print(f"{w.id}\t{state}\t{w.name}\t{json.dumps(w.match)}\t{_utc(w.starts_at)}\t{_utc(w.ends_at)}\t"
              f"{w.created_by}")
    return 0


def _maintenance_cancel(args: argparse.Namespace) -> int:
    from bot.escalation import cancel_maintenance
    from bot.models import MaintenanceWindow

    now = datetime.now(UTC)
    with _database() as db, db.session() as session:
        window = session.get(MaintenanceWindow, args.id, with_for_update=True)
        problem = ("does not exist" if window is None
                   else f"was already cancelled at {_utc(window.cancelled_at)}" if window.cancelled_at
                   else f"already ended at {_utc(window.ends_at)}" if window.ends_at <= now else None)
        if problem or window is None:
            print(f"oncall-bot: maintenance window {args.id} {problem} (see `oncall-bot maintenance list`)",
                  file=sys.stderr)
            return 1
        released = cancel_maintenance(session, window, now)
        name = window.name
    print(f"maintenance window {args.id} {name!r} cancelled; {released} held page(s) released")
    return 0


# -- jobs --------------------------------------------------------------------------------------------

_JOB_COLUMNS = ("id", "kind", "incident", "status", "attempts", "run_at", "last error")


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Columns padded to their widest cell; the last one is not padded (it is the long one)."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
            for row in (header, *rows)]


def _one_line(text: str | None, limit: int = 120) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def _jobs_list(args: argparse.Namespace) -> int:
    from bot.jobs_admin import list_jobs
    from bot.models import JobStatus

    with _database() as db, db.read() as session:
        jobs = list_jobs(session, failed_only=args.failed, limit=args.limit)
        rows = [(str(j.id), j.kind, str(j.incident_id) if j.incident_id is not None else "-", JobStatus(j.status).value,
                 str(j.attempts), _utc(j.run_at), _one_line(j.last_error)) for j in jobs]
    if not rows:
        print("no failed jobs" if args.failed else "no pending, running or failed jobs")
        return 0
    print("\n".join(_table(_JOB_COLUMNS, rows)))
    if len(rows) == args.limit:
        print(f"(the first {args.limit}; --limit shows more)", file=sys.stderr)
    return 0


def _jobs_retry(args: argparse.Namespace) -> int:
    from bot.jobs_admin import NotRetryable, retry_all_failed, retry_job

    now = datetime.now(UTC)
    with _database() as db, db.session() as session:
        if args.all_failed:
            ids = retry_all_failed(session, now)
            print(f"{len(ids)} failed job{'s' if len(ids) != 1 else ''} pending again"
                  + (f": {', '.join(map(str, ids))}" if ids else ""))
            return 0
        try:
            job = retry_job(session, args.id, now)
        except NotRetryable as exc:
            print(f"oncall-bot: {exc}", file=sys.stderr)
            return 1
        print(f"job {job.id} ({job.kind}) pending again after {job.attempts} attempt"
              f"{'s' if job.attempts != 1 else ''}; the bot runs it at its next poll")
    return 0


# -- audit -------------------------------------------------------------------------------------------

def _since(text: str, now: datetime) -> datetime:
    """--since: an ISO 8601 time with a zone, or how long ago (24h, 7d, 1h30m)."""
    from bot.param_syntax import parse_duration

    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r} is neither how long ago (24h, 7d, 1h30m) nor an ISO 8601 time "
                         f"(e.g. {_EXAMPLE_TIME})") from None
    return _when("--since", text)  # names a missing time zone


def _anchors(values: list[str]) -> list[Anchor]:
    """--anchor: the JSON itself (it starts with `{` or `[`), `-` for stdin, or a file of them."""
    from bot.audit import AnchorError, parse_anchors

    anchors: list[Anchor] = []
    for value in values:
        if value.lstrip().startswith(("{", "[")):
            anchors += parse_anchors("--anchor", value)
        elif value == "-":
            anchors += parse_anchors("--anchor - (stdin)", sys.stdin.read())
        else:
            try:
                content = Path(value).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise AnchorError(f"--anchor {value!r}: cannot read it ({reason}); give a file of what "
                                  "`oncall-bot audit head` printed, or that JSON itself") from None
            anchors += parse_anchors(value, content)
    return anchors


def _audit_verify(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from bot.audit import AnchorError, check_anchors, verify
    from bot.models import AuditEntry

    try:
        anchors = _anchors(args.anchor)  # before the database is touched
    except AnchorError as exc:
        print(f"oncall-bot: {exc}", file=sys.stderr)
        return 2
    with _database() as db, db.read() as session:
        count = session.scalar(select(func.count()).select_from(AuditEntry)) or 0  # before: all of them verified
        problems = [*verify(session), *check_anchors(session, anchors)]
    for problem in problems:
        print(problem)
    if problems:
        return 1
    held = {anchor.id for anchor in anchors}
    matching = (f", matching {len(held)} anchor{'s' if len(held) != 1 else ''} "
                f"({'entry' if len(held) == 1 else 'up to entry'} {max(held)})") if held else ""
    print(f"audit log ok: {count} entr{'y' if count == 1 else 'ies'}{matching}")
    return 0


def _audit_head(_: argparse.Namespace) -> int:
    from bot.audit import head

    with _database() as db, db.read() as session:
        print(json.dumps(head(session)))
    return 0


def _audit_export(args: argparse.Namespace) -> int:
    from bot.audit import export

    try:
        since = _since(args.since, datetime.now(UTC))
    except ValueError as exc:
        print(f"oncall-bot: {exc}", file=sys.stderr)
        return 2
    with _database() as db, db.read() as session:
        try:
            for entry in export(session, since):
                print(json.dumps(entry, ensure_ascii=False))
        except BrokenPipeError:  # `| head` has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
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
    lint = runbook.add_parser("lint", help="check runbook files: file:line: severity: message, exit 1 on errors")
    lint.add_argument("paths", nargs="*", help="files or directories (*.yaml, *.yml)")
    lint.add_argument("--shipped", action="store_true",
                      help="also the runbooks shipped with the bot (checked as a set of their own)")
    lint.add_argument("--strict", action="store_true", help="warnings fail too")
    lint.set_defaults(run=_runbook_lint)
    runbook.add_parser("schema", help="print the JSON Schema of a runbook").set_defaults(run=_runbook_schema)
    render = runbook.add_parser("render", help="print the Block Kit the bot would post for an alert")
    render.add_argument("file")
    render.add_argument("--alert", required=True, help="an Alertmanager webhook JSON, or one alert's JSON")
    render.add_argument("--locale", default="en", help="en, ja, ...")
    render.add_argument("--runbook", help="the runbook id, when the file holds several (default: the best match)")
    render.set_defaults(run=_runbook_render)

    maintenance = sub.add_parser("maintenance", help="maintenance windows: nothing pages inside one") \
        .add_subparsers(dest="what", required=True)
    add = maintenance.add_parser("add", help="declare a window (DATABASE_URL)")
    add.add_argument("--name", required=True)
    add.add_argument("--start", help="ISO time with a zone, e.g. 2026-12-01T02:00:00Z (default: now)")
    until = add.add_mutually_exclusive_group(required=True)
    until.add_argument("--end", help="ISO time with a zone")
    until.add_argument("--for", dest="duration", help="instead of --end: 30m, 2h, 1d")
    add.add_argument("--match", action="append", default=[], metavar="LABEL=REGEX",
                     help="only incidents whose label fully matches (repeatable; none: every incident)")
    add.set_defaults(run=_on_database(_maintenance_add))
    maintenance.add_parser("list", help="active and upcoming windows") \
        .set_defaults(run=_on_database(_maintenance_list))
    cancel = maintenance.add_parser("cancel", help="end a window now")
    cancel.add_argument("id", type=int)
    cancel.set_defaults(run=_on_database(_maintenance_cancel))

    jobs = sub.add_parser("jobs", help="the bot's queued work for Slack and PagerDuty (DATABASE_URL)") \
        .add_subparsers(dest="what", required=True)
    listing = jobs.add_parser("list", help="pending, running and failed jobs, oldest first")
    listing.add_argument("--failed", action="store_true", help="only failed jobs")
    listing.add_argument("--limit", type=int, default=100, help="at most this many rows (default 100)")
    listing.set_defaults(run=_on_database(_jobs_list))
    retry = jobs.add_parser("retry", help="put failed jobs back in the queue, due now (attempts are kept)")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?", help="the job id (see `oncall-bot jobs list --failed`)")
    which.add_argument("--all-failed", action="store_true", help="every failed job")
    retry.set_defaults(run=_on_database(_jobs_retry))

    audit = sub.add_parser("audit", help="the audit log of what was run, asked for and decided (DATABASE_URL)") \
        .add_subparsers(dest="what", required=True)
    check_log = audit.add_parser("verify", help="check the hash chain: `audit log ok: N entries`, else each broken "
                                                "entry, exit 1")
    check_log.add_argument("--anchor", action="append", default=[], metavar="ANCHOR",
                           help="also check a head kept elsewhere: the JSON `audit head` printed, a file of such "
                                "lines, or - for stdin (repeatable); catches the newest entries deleted or re-hashed")
    check_log.set_defaults(run=_on_database(_audit_verify))
    audit.add_parser("head", help='the newest entry as one JSON line {"id", "hash", "at"}: an anchor to keep '
                                  "elsewhere for `audit verify --anchor`") \
        .set_defaults(run=_on_database(_audit_head))
    dump = audit.add_parser("export", help="entries as JSON lines on stdout, oldest first")
    dump.add_argument("--since", required=True, metavar="T",
                      help="an ISO time with a zone (2026-12-01T00:00:00Z) or how long ago (24h, 7d)")
    dump.set_defaults(run=_on_database(_audit_export))
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
