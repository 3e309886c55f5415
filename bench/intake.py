"""Benchmark: Alertmanager webhook intake of the real app, beside a bare endpoint in the same run.

    .venv/bin/python -m bench.intake [--database sqlite|postgres|both] [--groups 200] [--alerts 5]
                                     [--connections 10] [--seconds 5] [--rate 200] [--paced-seconds 10]
                                     [--change-every 10]
                                     [--json bench-intake.json]

Two servers, each its own OS process served by uvicorn exactly as `oncall-bot serve` serves:
- the bot: `python -m commands.cli serve` on a fresh database, Slack being the project's fake
  (in this process; it is only busy while cards are posted and redrawn);
- bare: a Starlette route that reads the body, parses the JSON and answers (bench.bare).
The load comes from this process over loopback, on keep-alive HTTP/1.1 connections written by
hand (`Connection`) so that the client costs as little as it can and the same for both servers.

First the `--groups` groups (of `--alerts` alerts) are sent once: their incidents, channels and
cards are made, and the bench waits until Slack has every card. Then:
(a) throughput: `--connections` connections, each sending back to back, re-send the groups
    round-robin for `--seconds`, to the bare endpoint and then to the bot: webhooks/s of each and
    the ratio bot/bare. A re-send is what Alertmanager sends every repeat_interval (and each of
    an HA pair sends): the same group, alerts, states and annotations.
(b) ack latency at `--rate` webhooks/s, open-loop: each request starts at its scheduled time,
    whatever the earlier answers (a slow answer does not delay the next request, so there is no
    coordinated omission), on a pool of connections; latency runs from the scheduled start to the
    answer's last byte, so this process's own lateness counts against the bot. Two mixes:
    repeats only, and every `--change-every`-th webhook a change of its group (one annotation:
    the full transaction, a card redraw), the others repeats of the group as it then is.
(c) the full path alone: `--connections` connections sending back to back for `--seconds`,
    every webhook a change of its group: webhooks/s.
At the end: every group has one incident and one channel, every answer was the expected one.

Prints a table against the targets (ratio >= 0.5, ack p99 <= 25 ms at 200/s) and writes the
figures as JSON. A benchmark, not a timed test: the figures go in the issue's notes, with the
machine's load, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlmodel import col

from bench import NO_STORM, fresh_database, nearest_rank, progress, wait_until
from bot.db import Database
from bot.models import Incident, Job, JobStatus, utcnow
from tests.alerts import alert, group
from tests.conftest import SIGNING_SECRET, WEBHOOK_TOKEN, free_port
from tests.fakes.slack import FakeSlack

__all__ = ["Connection", "Served", "fresh_serve", "open_loop", "run", "serve_bot", "webhook_request"]

ANNOUNCE = "C0INCIDENTS"
TARGET_RATIO, TARGET_P99_MS = 0.5, 25.0


# -- the servers ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Served:
    """A server process the bench started, to serve on `url` (its output in `log`)."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    what: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def wait_serving(self) -> Served:
        """Until /healthz answers 200; the process's last output if it exits first."""
        def serving() -> bool:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.what} exited with {self.process.returncode}:\n"
                                 f"{self.log.read_text()[-3000:]}")
            try:
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(serving, f"{self.what} to serve", timeout=60)
        return self


@contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path, url: str, *, wait: bool) -> Iterator[Served]:
    """Start `argv`; with `wait`, until it serves (without, the caller calls wait_serving:
    two servers start side by side). Terminated at the end."""
    process = subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        served = Served(url, process, log, " ".join(argv[2:4]))
        yield served.wait_serving() if wait else served
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def serve_bot(database_url: str, slack: FakeSlack, tmp: Path, policy: dict[str, Any] | None = None, *,
              wait: bool = True, rate_limit: bool = False) -> Any:
    """`oncall-bot serve` as its own process on `database_url`, Slack being `slack`, the announce
    channel and `policy`'s sections as its ONCALL_CONFIG; its log in `tmp` (`wait`: see _process)."""
    config = tmp / "oncall.json"  # JSON is YAML
    config.write_text(json.dumps({"channels": {"announce": ANNOUNCE}, **(policy or {})}))
    port = free_port()
    env = {**os.environ, "SLACK_BOT_TOKEN": slack.token, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "SLACK_API_URL": slack.base_url, "DATABASE_URL": database_url,
           "ALERTMANAGER_WEBHOOK_TOKEN": WEBHOOK_TOKEN, "ONCALL_CONFIG": str(config), "LOG_LEVEL": "INFO",
           # Off but for bench.storm: Slack's limits (chat.update: 50 a minute) would measure Slack, not the bot.
           "SLACK_RATE_LIMIT": "on" if rate_limit else "off"}
    argv = [sys.executable, "-m", "commands.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return _process(argv, env, tmp / "bot.log", f"http://127.0.0.1:{port}", wait=wait)


@contextmanager
def fresh_serve(kind: str) -> Iterator[tuple[str, FakeSlack, Served]]:
    """`oncall-bot serve` as deployed (Slack's rate limits kept) on a fresh `kind` database and
    a Slack fake of its own: (database URL, the fake, the server)."""
    with ExitStack() as stack:
        url = stack.enter_context(fresh_database(kind))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        slack = FakeSlack().start()
        stack.callback(slack.stop)
        yield url, slack, stack.enter_context(serve_bot(url, slack, tmp, rate_limit=True))


def _bare(tmp: Path) -> Any:
    port = free_port()
    argv = [sys.executable, "-m", "bench.bare", str(port)]
    return _process(argv, dict(os.environ), tmp / "bare.log", f"http://127.0.0.1:{port}", wait=True)


# -- the client -------------------------------------------------------------------------------------

class Connection:
    """One keep-alive HTTP/1.1 connection: a request written whole, the answer read by its Content-Length."""

    _LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")
    # uvicorn closes a keep-alive connection idle for 5 s (timeout_keep_alive); at a slow pace
    # (bench.storm) a pooled connection waits longer than that, so it is opened anew first.
    STALE_SECONDS = 4.0

    def __init__(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.port, self.reader, self.writer = port, reader, writer
        self.used = time.monotonic()

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(port, *await asyncio.open_connection("127.0.0.1", port))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if time.monotonic() - self.used > self.STALE_SECONDS:
            self.close()
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.used = time.monotonic()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        found = self._LENGTH.search(head)
        body = await self.reader.readexactly(int(found.group(1))) if found else b""
        self.used = time.monotonic()  # the server's idle timer starts from its answer
        return int(head[9:12]), body

    def close(self) -> None:
        self.writer.close()


def webhook_request(payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    return (b"POST /alertmanager HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + WEBHOOK_TOKEN.encode() + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def _group(g: int, alerts: int, since: datetime, note: dict[str, str] | None = None) -> bytes:
    """Group `g`: `alerts` alerts firing since `since` (a re-send carries the same startsAt), with
    the annotations `note` (what changes from one version of the group to the next)."""
    members = [alert(f"Bench{g}", labels={"instance": f"api-{i}"}, annotations=note, starts_at=since.isoformat())
               for i in range(alerts)]
    return webhook_request(group(*members, group_key=f'{{}}:{{alertname="Bench{g}"}}'))


def _mixed(groups: int, alerts: int, since: datetime, count: int, every: int) -> tuple[list[bytes], int]:
    """`count` webhooks round the groups, every `every`-th one a change of its group, the others
    repeats of the group as it now is; and how many changes."""
    versions = [0] * groups
    requests = []
    for i in range(count):
        g = i % groups
        versions[g] += i % every == every - 1
        requests.append(_group(g, alerts, since, {"mix": str(versions[g])} if versions[g] else None))
    return requests, sum(versions)


def _outcome(status: int, body: bytes) -> str:
    if status != 200:
        return str(status)
    return str(json.loads(body).get("outcome", "ok"))


async def _closed_loop(port: int, requests: list[bytes], connections: int, seconds: float) -> dict[str, Any]:
    """Each connection sends back to back for `seconds`; webhooks answered per second."""
    outcomes: Counter[str] = Counter()
    deadline = time.perf_counter() + seconds

    async def sender(first: int) -> None:
        connection = await Connection.open(port)
        try:
            i = first
            while time.perf_counter() < deadline:
                outcomes[_outcome(*await connection.send(requests[i % len(requests)]))] += 1
                i += connections
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(sender(c) for c in range(connections)))
    elapsed = time.perf_counter() - started
    return {"per_second": sum(outcomes.values()) / elapsed, "outcomes": dict(outcomes)}


async def open_loop(port: int, requests: list[bytes], rate: float, pool: int = 64) -> dict[str, Any]:
    """Request i starts at start + i/rate on a free pooled connection; its latency counts from then."""
    loop = asyncio.get_running_loop()
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(pool):
        free.put_nowait(await Connection.open(port))
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    start = loop.time() + 0.2

    async def one(i: int, request: bytes) -> None:
        scheduled = start + i / rate
        await asyncio.sleep(scheduled - loop.time())
        connection = await free.get()
        try:
            outcomes[_outcome(*await connection.send(request))] += 1
        finally:
            free.put_nowait(connection)
        latencies.append(loop.time() - scheduled)

    await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
    while not free.empty():
        free.get_nowait().close()
    ms = sorted(v * 1000 for v in latencies)
    return {"p50_ms": nearest_rank(ms, 50), "p99_ms": nearest_rank(ms, 99), "max_ms": ms[-1], "n": len(ms),
            "outcomes": dict(outcomes)}


# -- the run ----------------------------------------------------------------------------------------

def _settled(db: Database, groups: int) -> bool:
    with db.read() as session:
        carded = session.scalar(select(func.count()).select_from(Incident).where(col(Incident.card_ts).is_not(None)))
        busy = session.scalar(select(func.count()).select_from(Job).where(
            col(Job.status).in_([JobStatus.PENDING, JobStatus.RUNNING]), col(Job.run_at) <= utcnow()))
    return carded == groups and busy == 0


def run(kind: str, *, groups: int = 200, alerts: int = 5, connections: int = 10, seconds: float = 5.0,
        rate: float = 200.0, paced_seconds: float = 10.0, change_every: int = 10) -> dict[str, Any]:
    """The phases of the module's docstring on a fresh `kind` database; the figures as a dict."""
    args = argparse.Namespace(groups=groups, alerts=alerts, connections=connections, seconds=seconds, rate=rate,
                              paced_seconds=paced_seconds, change_every=change_every)
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_database(kind))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        slack = FakeSlack().start()
        stack.callback(slack.stop)
        starting = stack.enter_context(serve_bot(database_url, slack, tmp, NO_STORM, wait=False))
        bare = stack.enter_context(_bare(tmp)).port  # while the bot starts
        bot = starting.wait_serving().port
        db = Database(database_url)
        stack.callback(db.dispose)
        since = utcnow() - timedelta(hours=1)
        repeats = [_group(g, args.alerts, since) for g in range(args.groups)]

        created = asyncio.run(_send_once(bot, repeats, args.connections))
        wait_until(lambda: _settled(db, args.groups), "every incident's card in Slack", timeout=300)
        progress(f"intake {kind}: {args.groups} groups opened, cards posted; throughput, bare then bot, "
                 f"{args.seconds:g} s each")

        asyncio.run(_closed_loop(bare, repeats, args.connections, 1.0))  # warm-up
        floor = asyncio.run(_closed_loop(bare, repeats, args.connections, args.seconds))
        asyncio.run(_closed_loop(bot, repeats, args.connections, 1.0))
        intake = asyncio.run(_closed_loop(bot, repeats, args.connections, args.seconds))
        progress(f"intake {kind}: {floor['per_second']:.0f}/s bare, {intake['per_second']:.0f}/s bot; paced acks "
                 f"at {args.rate:g}/s, 2 x {args.paced_seconds:g} s")

        paced = int(args.rate * args.paced_seconds)
        ack_repeats = asyncio.run(open_loop(bot, (repeats * (paced // len(repeats) + 1))[:paced], args.rate))
        mixed, changed = _mixed(args.groups, args.alerts, since, paced, args.change_every)
        ack_mixed = asyncio.run(open_loop(bot, mixed, args.rate))
        progress(f"intake {kind}: repeats p99 {ack_repeats['p99_ms']:.1f} ms, mix p99 {ack_mixed['p99_ms']:.1f} ms; "
                 f"every webhook a change, {args.seconds:g} s")
        wait_until(lambda: _settled(db, args.groups), "the card redraws to finish", timeout=300)

        # Every webhook a change (each group's "load" annotation counts up; a group's versions go
        # in order, all on one connection): what the full transaction alone can take.
        changes = [_group(g, args.alerts, since, {"load": str(n)}) for n in range(200) for g in range(args.groups)]
        full_path = asyncio.run(_closed_loop(bot, changes, args.connections, args.seconds))
        wait_until(lambda: _settled(db, args.groups), "the card redraws to finish", timeout=300)

        _check(db, slack, args.groups, [("created", created["outcomes"]), ("unchanged", intake["outcomes"]),
                                        ("unchanged", ack_repeats["outcomes"]), ("updated", full_path["outcomes"])])
        if ack_mixed["outcomes"] != {"unchanged": paced - changed, "updated": changed}:
            raise SystemExit(f"wrong: {changed} changes and {paced - changed} repeats were answered "
                             f"{ack_mixed['outcomes']}")
        return {"database": kind, "bare_per_s": floor["per_second"], "bot_per_s": intake["per_second"],
                "ratio": intake["per_second"] / floor["per_second"], "create_per_s": created["per_second"],
                "full_path_per_s": full_path["per_second"], "ack_repeats": ack_repeats, "ack_mixed": ack_mixed,
                "intake_outcomes": intake["outcomes"]}


async def _send_once(port: int, requests: list[bytes], connections: int) -> dict[str, Any]:
    """Each request once, over `connections` connections: the groups' first notifications."""
    outcomes: Counter[str] = Counter()
    queue = list(reversed(requests))

    async def sender() -> None:
        connection = await Connection.open(port)
        try:
            while queue:
                outcomes[_outcome(*await connection.send(queue.pop()))] += 1
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(connections)))
    return {"per_second": len(requests) / (time.perf_counter() - started), "outcomes": dict(outcomes)}


def _check(db: Database, slack: FakeSlack, groups: int, answers: list[tuple[str, dict[str, int]]]) -> None:
    """Every group applied exactly once (one incident, one channel), every answer the expected one."""
    with db.read() as session:
        incidents = session.scalar(select(func.count()).select_from(Incident))
    channels = len(slack.calls_to("conversations.create")) - slack.count_failed("conversations.create")
    unexpected = [f"{count} {outcome} (expected {expected})" for expected, outcomes in answers
                  for outcome, count in outcomes.items() if outcome != expected]
    if incidents != groups or channels != groups or unexpected:
        raise SystemExit(f"wrong: {incidents} incidents and {channels} channels for {groups} groups; "
                         f"unexpected answers: {unexpected}")


def _table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    rows = [f"intake: {args.groups} groups x {args.alerts} alerts, {args.connections} connections, "
            f"{args.seconds:g} s; acks open-loop at {args.rate:g}/s for {args.paced_seconds:g} s, the mix "
            f"1 change in {args.change_every}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
            f"{'database':10} {'bare/s':>7} {'bot/s':>7} {'ratio':>6}  {'repeats p50/p99 ms':>18}  "
            f"{'mix p50/p99 ms':>16}  {'changes/s':>9}  {'first/s':>7}"]
    for r in results:
        rep, mix = r["ack_repeats"], r["ack_mixed"]
        rows.append(f"{r['database']:10} {r['bare_per_s']:7.0f} {r['bot_per_s']:7.0f} {r['ratio']:6.2f}  "
                    f"{rep['p50_ms']:7.1f} / {rep['p99_ms']:7.1f}  {mix['p50_ms']:6.1f} / {mix['p99_ms']:6.1f}  "
                    f"{r['full_path_per_s']:9.0f}  {r['create_per_s']:7.0f}")
    rows.append(f"targets: ratio >= {TARGET_RATIO}, ack p99 <= {TARGET_P99_MS:g} ms at {args.rate:g}/s")
    for r in results:
        verdict = [f"ratio {'met' if r['ratio'] >= TARGET_RATIO else 'MISSED'}"] + [
            f"{mix} p99 {'met' if r[f'ack_{mix}']['p99_ms'] <= TARGET_P99_MS else 'MISSED'}"
            for mix in ("repeats", "mixed")]
        rows.append(f"  {r['database']}: " + ", ".join(verdict))
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--alerts", type=int, default=5)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput: how long each server is loaded")
    parser.add_argument("--rate", type=float, default=200.0, help="acks: webhooks per second, open-loop")
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="acks: how long each mix is sent")
    parser.add_argument("--change-every", type=int, default=10, help="acks: the mix's share of changes (1 in N)")
    parser.add_argument("--json", type=Path, default=Path("bench-intake.json"))
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    load_before = os.getloadavg()
    results = [run(kind, groups=args.groups, alerts=args.alerts, connections=args.connections, seconds=args.seconds,
                   rate=args.rate, paced_seconds=args.paced_seconds, change_every=args.change_every)
               for kind in kinds]
    print(_table(results, args))
    args.json.write_text(json.dumps({"settings": {k: v for k, v in vars(args).items() if k != "json"} | {
        "cpus": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "results": results}, indent=2, default=str) + "\n")
    print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
