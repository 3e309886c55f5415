"""The card as memory and as a control: the last incidents like it and what ended them, its
remediations, buttons for the states it is likely to move to next; and `/oncall` saying who is on
call now and next.

Everything crosses real HTTP: incidents opened and resolved through the running bot's Alertmanager
webhook, signed `block_actions` and slash commands into Bolt, the card read where the Slack fake
has it, remediations run against the Kubernetes fake, PagerDuty's fake over TLS. Time is the
injected clock (moved forward, never a calendar date), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import or_, select
from sqlmodel import col

from bot.card_memory import LIKELY_NEXT
from bot.lifecycle import TRANSITIONS
from bot.models import ApprovalRequest, Incident, IncidentStatus, Job, JobStatus, RunbookStep
from bot.paging import LOOKAHEAD
from commands.ids import card_state_action
from commands.slack_time import slack_time
from integrations.pagerduty import PagerDutyError, PagerDutyRest
from tests.alerts import alert, group, resolved
from tests.conftest import FakeClock, RunningBot, open_with_card, start_bot, wait_for
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack
from tests.slack_requests import block_actions, post_to_slack_events
from tests.test_approvals import decide, request
from tests.test_declare import fields, incidents, open_modal, ready, submit
from tests.test_incident_command import ask, incident, open_in_channel, pagerduty, pd_bot, timeline
from tests.test_runbook_flow import LABELS, by_id, click, kubernetes, posted_steps, runbook_settings

__all__ = ["kubernetes", "pagerduty", "pd_bot"]  # the fixtures, reused

S = IncidentStatus


# -- helpers ----------------------------------------------------------------------------------------

@pytest.fixture
def memory_bot(database_url: str, slack: FakeSlack, kubernetes: FakeKubernetes, tmp_path: Path,
               clock: FakeClock) -> Iterator[RunningBot]:
    """Runbooks with remediations (Kubernetes fake), and incidents labelled visibility=private private."""
    settings = runbook_settings(database_url, slack, kubernetes.kubeconfig(tmp_path / "kubeconfig"),
                                channels={"announce": "C0INCIDENTS", "private_when": [{"visibility": "private"}]})
    running = start_bot(settings, clock=clock)
    try:
        yield running
    finally:
        running.stop()
        running.services.db.dispose()


def open_like(bot: RunningBot, slack: FakeSlack, key: str, **labels: str) -> tuple[Incident, dict[str, Any]]:
    """A PodRestartLoop on the service `api` (unless `labels` say otherwise), its own alert group."""
    payload = group(alert("PodRestartLoop", labels={**LABELS, **labels}),
                    group_key=f'{{}}:{{alertname="PodRestartLoop",k="{key}"}}')
    row = open_with_card(bot, payload)
    if row.channel_id in slack.channels:
        slack.channels[row.channel_id].members.update({"U0BOB", "U0CAROL"})
    return row, payload


def quiet(bot: RunningBot, clock: FakeClock) -> None:
    """Nothing due is in flight (jobs due later, like a request's expiry, may wait): the clock
    may move without a running job looking abandoned."""
    def idle() -> bool:
        bot.services.timers.fire_due()
        with bot.services.db.read() as session:
            return session.scalars(select(Job).where(
                col(Job.status).in_([JobStatus.PENDING, JobStatus.RUNNING]),
                or_(col(Job.status) == JobStatus.RUNNING, col(Job.run_at) <= clock()))).first() is None
    wait_for(idle, what="the due work to be done")


def resolve_after(bot: RunningBot, clock: FakeClock, payload: dict[str, Any], minutes: int) -> Incident:
    """Alertmanager says the group resolved, `minutes` after the incident opened (the clock moved)."""
    quiet(bot, clock)
    clock.advance(minutes=minutes)
    reply = bot.post_alerts(resolved(payload))
    assert reply.status_code == 200 and reply.json()["outcome"] == "resolved", reply.text
    return incident(bot, reply.json()["incident_id"])


def blocks(slack: FakeSlack, row: Incident) -> list[dict[str, Any]]:
    return next(m for m in slack.messages(row.card_channel_id) if m.ts == row.card_ts).blocks


def context_text(slack: FakeSlack, row: Incident, starts: str) -> str | None:
    """The card's context block whose text starts so, as Slack has it now (None: not there)."""
    return next((b["elements"][0]["text"] for b in blocks(slack, row) if b["type"] == "context"
                 and b["elements"][0]["text"].startswith(starts)), None)


def state_buttons(slack: FakeSlack, row: Incident) -> list[tuple[str, str, str]]:
    """(label, action id, value) of the card's state buttons, as it shows them now."""
    found = [b for b in blocks(slack, row) if b.get("block_id") == "incident_states"]
    return [(e["text"]["text"], e["action_id"], e["value"]) for b in found for e in b["elements"]]


def press(bot: RunningBot, slack: FakeSlack, row: Incident, action_id: str, value: str, user: str) -> None:
    body = block_actions(action_id, value, user=user, channel=row.card_channel_id or "",
                         response_url=slack.response_url(),
                         message={"type": "message", "ts": row.card_ts, "text": "", "blocks": []})
    assert post_to_slack_events(bot.url, body).status_code == 200


def answers(slack: FakeSlack) -> list[str]:
    """Private answers to clicks, through their response_url (the original message kept)."""
    return [m["text"] for _, m in list(slack.responses) if m["response_type"] == "ephemeral"
            and not m["replace_original"]]


def approvals(bot: RunningBot, incident_id: int | None) -> list[ApprovalRequest]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(ApprovalRequest).where(ApprovalRequest.incident_id == incident_id)
                                    .order_by(ApprovalRequest.id)))


def step_row(bot: RunningBot, step_id: int | None) -> RunbookStep:
    with bot.services.db.read() as session:
        found = session.get(RunbookStep, step_id)
        assert found is not None
        return found


# -- past incidents as memory -------------------------------------------------------------------------

def test_the_card_names_the_last_resolved_incidents_like_it_and_what_ended_them(
        memory_bot: RunningBot, slack: FakeSlack, clock: FakeClock) -> None:
    bot = memory_bot
    oldest, payload = open_like(bot, slack, "oldest")
    resolve_after(bot, clock, payload, 3)

    remediated, payload = open_like(bot, slack, "remediated")  # a pod deleted, once approved
    _, message = request(bot, slack, remediated)
    assert decide(bot, slack, remediated, message, "U0BOB").status_code == 200
    wait_for(lambda: approvals(bot, remediated.id)[0].status == "succeeded", what="the pod deleted")
    resolve_after(bot, clock, payload, 14)

    diagnosed, payload = open_like(bot, slack, "diagnosed")  # a runbook step that ran fine
    pods = by_id(posted_steps(bot, diagnosed), "pods")
    assert click(bot, slack, pods, "U0ALICE").status_code == 200
    wait_for(lambda: step_row(bot, pods.id).last_ok is True, what="the step to run")
    resolve_after(bot, clock, payload, 120)

    plain, payload = open_like(bot, slack, "plain")  # resolved with nothing run
    resolve_after(bot, clock, payload, 45)
    elsewhere, payload = open_like(bot, slack, "elsewhere", service="billing")  # another service
    resolve_after(bot, clock, payload, 5)
    secret, payload = open_like(bot, slack, "secret", visibility="private")  # private: on no other card
    assert incident(bot, secret.id).private
    resolve_after(bot, clock, payload, 6)
    still_open, _ = open_like(bot, slack, "still-open")  # not resolved: not a memory yet

    current, payload = open_like(bot, slack, "current")
    memory = wait_for(lambda: context_text(slack, current, ":bulb:"), what="the past incidents on the card")
    title, *lines = memory.split("\n")
    assert title == ":bulb: *Seen before* (the same alert on the same service, last resolved first):"
    expected = [(plain, "resolved in 45 min"),
                (diagnosed, "resolved in 2 h · last time: runbook step `pods` (List pods)"),
                (remediated, "resolved in 14 min · last time: Delete pod `api-7d9f-x2`")]
    assert len(lines) == len(expected)  # the oldest is the fourth: three at most
    for line, (past, what) in zip(lines, expected, strict=True):
        assert line.startswith(f"• <!date^{int(past.created_at.timestamp())}^"), line
        assert line.endswith(f" #{past.id} <#{past.channel_id}>: {what}"), line
    for other in (oldest, elsewhere, secret, still_open, current):
        assert f" #{other.id} " not in memory

    resolve_after(bot, clock, payload, 10)  # resolved itself: its card still remembers, never itself
    wait_for(lambda: context_text(slack, current, ":bulb:") and not state_buttons(slack, current)
             and any(b["type"] == "section" and "*Resolved*" in json.dumps(b) for b in blocks(slack, current)),
             what="the resolved card")
    assert context_text(slack, current, ":bulb:") == memory


def declare(bot: RunningBot, slack: FakeSlack, title: str) -> Incident:
    """`/incident new`, the form submitted: a P2 on the service `api`, once its card is posted."""
    _, view = open_modal(bot, slack, channel="C0INCIDENTS")
    assert submit(bot, view, fields(title, "P2", service="api")).json()["response_action"] == "update"
    return ready(bot, incidents(bot)[-1].id)


def test_declared_incidents_are_no_memory_and_have_none(memory_bot: RunningBot, slack: FakeSlack,
                                                        clock: FakeClock) -> None:
    """Declared incidents share one alertname (`incidents.declared_alertname`): matching on it would
    make every declared incident on a service "remember" the others, however unrelated."""
    bot = memory_bot
    first = declare(bot, slack, "Checkout is slow")
    quiet(bot, clock)
    clock.advance(minutes=20)
    assert "resolved" in ask(bot, slack, "resolve", channel=first.channel_id or "").lower()
    assert incident(bot, first.id).resolved_at is not None
    # An Alertmanager alert that happens to bear the declared alertname, resolved: a memory for its kind.
    alerted = group(alert("ManualIncident", labels=LABELS), group_key='{}:{alertname="ManualIncident",k="1"}')
    earlier = open_with_card(bot, alerted)
    resolve_after(bot, clock, alerted, 7)

    second = declare(bot, slack, "Login page blank")  # the same alertname and service as both
    quiet(bot, clock)
    assert context_text(slack, second, ":bulb:") is None

    again = group(alert("ManualIncident", labels=LABELS), group_key='{}:{alertname="ManualIncident",k="2"}')
    current = open_with_card(bot, again)
    memory = wait_for(lambda: context_text(slack, current, ":bulb:"), what="the past incidents on the card")
    assert f" #{earlier.id} " in memory  # its own kind, from Alertmanager
    assert f" #{first.id} " not in memory and f" #{second.id} " not in memory  # never a declared one


# -- the state buttons --------------------------------------------------------------------------------

def test_the_likely_next_states_are_transitions_and_at_most_three() -> None:
    for state, offered in LIKELY_NEXT.items():
        assert set(offered) <= TRANSITIONS[state] and len(offered) <= 3, state
        assert S.RESOLVED not in offered  # the card's Resolve button does that


def test_a_state_button_moves_the_state_and_a_stale_click_is_refused(bot: RunningBot, slack: FakeSlack) -> None:
    slack.add_user("U0MALLORY", "mallory@example.com", "mallory")
    slack.add_user("U0KENJI", "kenji@example.com", "kenji", locale="ja-JP")
    row = open_in_channel(bot)
    slack.channels[row.channel_id or ""].members.update({"U0BOB", "U0KENJI"})
    shown = state_buttons(slack, row)
    assert [(label, action) for label, action, _ in shown] == [
        ("→ Triaged", card_state_action("detected", "triaged")),
        ("→ Investigating", card_state_action("detected", "investigating"))]
    (_, to_triaged, value), (_, to_investigating, _) = shown
    assert value == f"{row.card_token}.0"  # the card's token, as its other buttons

    press(bot, slack, row, to_investigating, value, "U0BOB")
    wait_for(lambda: incident(bot, row.id).status == S.INVESTIGATING, what="the state to move")
    [moved] = [e for e in timeline(bot, row.id) if e.kind == "status"]
    assert (moved.actor, moved.text) == ("U0BOB", "detected → investigating")
    wait_for(lambda: [label for label, _, _ in state_buttons(slack, row)] == ["→ Identified", "→ Mitigating"],
             what="the card redrawn with the next states")
    assert "*INVESTIGATING*" in json.dumps(blocks(slack, row))
    assert answers(slack) == []  # the card says it; nothing to answer

    press(bot, slack, row, to_triaged, value, "U0BOB")  # from the card as it was drawn before
    [stale] = wait_for(lambda: answers(slack), what="the refusal")
    assert stale == ("Not changed: it is *investigating* now (it changed since the card showed *detected*). The "
                     "card shows the states it can move to from here.")
    press(bot, slack, row, to_triaged, value, "U0KENJI")
    wait_for(lambda: len(answers(slack)) == 2, what="the refusal in Japanese")
    assert answers(slack)[1].startswith("変更していません。現在の状態は *investigating* です")

    slack.responses.clear()
    press(bot, slack, row, card_state_action("investigating", "identified"), value, "U0MALLORY")  # not a member
    [refused] = wait_for(lambda: answers(slack), what="the refusal")
    assert refused == f"Only members of <#{row.channel_id}> can change its state; join the channel first."
    press(bot, slack, row, card_state_action("investigating", "resolved"), value, "U0BOB")  # not offered: made up
    wait_for(lambda: len(answers(slack)) == 2, what="the refusal")
    assert answers(slack)[1].startswith("Not changed: it is *investigating* now")
    after = incident(bot, row.id)
    assert after.status == S.INVESTIGATING and after.resolved_at is None
    assert [e.text for e in timeline(bot, row.id) if e.kind == "status"] == ["detected → investigating"]


# -- the remediations line ---------------------------------------------------------------------------

def test_the_card_lists_its_remediations_newest_first_as_they_change(
        memory_bot: RunningBot, slack: FakeSlack) -> None:
    bot = memory_bot
    row, _ = open_like(bot, slack, "remediations")
    assert context_text(slack, row, ":wrench:") is None  # none requested yet
    _, message = request(bot, slack, row)  # delete-pod, medium risk, by U0ALICE
    awaiting = wait_for(lambda: context_text(slack, row, ":wrench:"), what="the remediations line")
    assert awaiting.startswith(":wrench: *Remediations* (newest first):\n"
                               "• Delete pod `api-7d9f-x2`: :lock: awaiting approval · requested by <@U0ALICE> · "
                               "expires <!date^")

    assert decide(bot, slack, row, message, "U0BOB").status_code == 200
    done = wait_for(lambda: (text := context_text(slack, row, ":wrench:")) and ":white_check_mark: done" in text
                    and text, what="the line after the approval")
    [deleted] = approvals(bot, row.id)
    assert done == (":wrench: *Remediations* (newest first):\n• Delete pod `api-7d9f-x2`: :white_check_mark: done: "
                    f"{deleted.result} · approved by <@U0BOB>")

    rollback = by_id(posted_steps(bot, row), "rollback")  # high risk, and no experts: it waits
    assert click(bot, slack, rollback, "U0ALICE").status_code == 200
    both = wait_for(lambda: (text := context_text(slack, row, ":wrench:")) and text.count("\n") == 2 and text,
                    what="two remediations on the card")
    assert both.split("\n")[1].startswith("• Roll back deployment `api`: :lock: awaiting approval")
    assert both.split("\n")[2] == done.split("\n")[1]


# -- /oncall: now and next ------------------------------------------------------------------------------

def test_oncall_says_who_is_on_call_now_and_next_in_one_request(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    now = clock().replace(microsecond=0)
    handover = now + timedelta(hours=3)
    pagerduty.set_oncall("PEP1", 1, ["PBOB"], schedule_id="PSCHED1", start=now - timedelta(hours=5), end=handover)
    pagerduty.add_oncall_shift("PEP1", 1, "PDAN", start=handover, end=handover + timedelta(days=1),
                               schedule_id="PSCHED1")
    pagerduty.add_oncall_shift("PEP1", 1, "PALICE", start=handover + timedelta(days=1),
                               end=handover + timedelta(days=2), schedule_id="PSCHED1")  # after next: not shown
    pagerduty.set_oncall("PEP1", 3, [])  # nobody at level 3 until Alice takes it in two days
    pagerduty.add_oncall_shift("PEP1", 3, "PALICE", start=now + timedelta(days=2), end=now + timedelta(days=3))
    before = len(pagerduty.requests_to("/oncalls"))

    answer = ask(pd_bot, slack, "", channel="C0INCIDENTS", command="/oncall").splitlines()
    asked = clock()
    assert answer[:5] == [
        "*Who is on call now*", "PagerDuty escalation policy `PEP1`:",
        f"• *L2 primary on-call* (PagerDuty level 1): <@U0BOB> until {slack_time(handover, asked)} · next: Dan "
        f"from {slack_time(handover, asked)}",
        "• *L3 engineering lead* (PagerDuty level 2): <@U0CAROL> (always on call)",
        f"• *L4 management* (PagerDuty level 3): nobody on call · next: <@U0ALICE> from "
        f"{slack_time(now + timedelta(days=2), asked)}"]
    [sent] = pagerduty.requests_to("/oncalls")[before:]  # one request for every level
    assert sent.query["escalation_policy_ids[]"] == ["PEP1"] and sent.param("earliest") == "true"
    since, until = (datetime.fromisoformat(sent.param(key) or "") for key in ("since", "until"))
    assert timedelta() <= asked - since < timedelta(seconds=5)  # from the bot's clock, now
    assert until - since == LOOKAHEAD

    clock.advance(hours=4)  # past the handover: Dan now, Alice next
    answer = ask(pd_bot, slack, "", channel="C0INCIDENTS", command="/oncall").splitlines()
    later = clock()
    assert answer[2] == (f"• *L2 primary on-call* (PagerDuty level 1): Dan until "
                         f"{slack_time(handover + timedelta(days=1), later)} · next: <@U0ALICE> from "
                         f"{slack_time(handover + timedelta(days=1), later)}")


def test_oncall_for_a_service_routes_by_its_alerts_not_by_what_a_declaration_typed(
        pd_bot: RunningBot, slack: FakeSlack) -> None:
    """pd_bot routes `team: payments` to PPAY. A declared incident carries only what its form said
    (the service, a severity): the newest incident of `api` being a declared one must not route
    `/oncall api` elsewhere; a service only declarations named routes as just its name."""
    open_with_card(pd_bot, group(alert("PodRestartLoop", labels=LABELS), group_key='{}:{alertname="PodRestartLoop"}'))
    for service in ("api", "search"):
        _, view = open_modal(pd_bot, slack, channel="C0INCIDENTS")
        assert submit(pd_bot, view, fields(f"{service} is slow", "P4", service=service)).json()["response_action"] \
            == "update"
    assert [(i.source, i.service) for i in incidents(pd_bot)] == [("alertmanager", "api"), ("slack", "api"),
                                                                 ("slack", "search")]
    api = ask(pd_bot, slack, "api", channel="C0INCIDENTS", command="/oncall").splitlines()
    assert api[:2] == ["*Who is on call now for `api`*", "PagerDuty escalation policy `PPAY`:"]
    assert "*Responders* (invited to each matching incident's channel): <@U0ALICE>, <!subteam^S0SRE>" in api
    search = ask(pd_bot, slack, "search", channel="C0INCIDENTS", command="/oncall").splitlines()
    assert search[1] == "PagerDuty escalation policy `PEP1`:"  # `{service: search}` matches no route


def test_oncall_in_japanese_from_pagerduty(pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty,
                                           clock: FakeClock) -> None:
    slack.add_user("U0KENJI", "kenji@example.com", "kenji", locale="ja-JP")
    now = clock().replace(microsecond=0)
    pagerduty.set_oncall("PEP1", 1, ["PBOB"], start=now - timedelta(hours=1), end=now + timedelta(hours=1))
    answer = ask(pd_bot, slack, "", channel="C0INCIDENTS", command="/oncall", user="U0KENJI").splitlines()
    asked = clock()
    assert answer[2] == (f"• *L2 primary on-call* (PagerDuty レベル 1): <@U0BOB> "
                         f"{slack_time(now + timedelta(hours=1), asked)} まで · 次: 今後 30 日間は予定なし")
    assert answer[3] == "• *L3 engineering lead* (PagerDuty レベル 2): <@U0CAROL> (常時オンコール)"


def test_oncall_without_pagerduty_names_the_levels_from_the_configuration(bot: RunningBot, slack: FakeSlack) -> None:
    slack.add_user("U0KENJI", "kenji@example.com", "kenji", locale="ja-JP")
    answer = ask(bot, slack, "", channel="C0INCIDENTS", command="/oncall").splitlines()
    assert answer[2:5] == [
        "• *L2 primary on-call* (PagerDuty level 1): not known without PagerDuty · next: not known from config",
        "• *L3 engineering lead* (PagerDuty level 2): not known without PagerDuty · next: not known from config",
        "• *L4 management* (PagerDuty level 3): not known without PagerDuty · next: not known from config"]
    japanese = ask(bot, slack, "", channel="C0INCIDENTS", command="/oncall", user="U0KENJI").splitlines()
    assert japanese[2] == "• *L2 primary on-call*(PagerDuty レベル 1): PagerDuty なしでは不明 · 次: 設定からは不明"


def test_oncall_shifts_are_the_periods_overlapping_the_window(pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    now = clock().replace(microsecond=0)
    pagerduty.set_oncall("PEP1", 1, ["PBOB"], start=now - timedelta(days=1), end=now - timedelta(hours=1))  # over
    for days in (1, 3):  # Dan twice: the earliest only
        pagerduty.add_oncall_shift("PEP1", 1, "PDAN", start=now + timedelta(days=days),
                                   end=now + timedelta(days=days + 1))
    pagerduty.add_oncall_shift("PEP1", 1, "PALICE", start=now + timedelta(days=20), end=now + timedelta(days=21))
    with PagerDutyRest(pagerduty.api_token, base_url=pagerduty.base_url, verify=pagerduty.ca_file) as rest:
        shifts = rest.oncall_shifts(["PEP1", "PPAY"], since=now, until=now + timedelta(days=7))
        assert [(s.escalation_policy_id, s.escalation_level, s.id, s.start) for s in shifts] == [
            ("PEP1", 1, "PDAN", now + timedelta(days=1)), ("PEP1", 2, "PCAROL", None), ("PEP1", 3, "PALICE", None),
            ("PPAY", 1, "PCAROL", None), ("PPAY", 2, "PDAN", None), ("PPAY", 3, "PALICE", None)]
        assert len(pagerduty.requests_to("/oncalls")) == 1
        with pytest.raises(PagerDutyError, match="at most 90 days"):
            rest.oncall_shifts(["PEP1"], since=now, until=now + timedelta(days=91))
    reply = httpx.get(f"{pagerduty.base_url}/oncalls", verify=pagerduty.ssl_context(),
                      headers={"Authorization": f"Token token={pagerduty.api_token}"},
                      params={"since": f"{now:%Y-%m-%dT%H:%M:%SZ}",
                              "until": f"{now - timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}"})
    assert reply.status_code == 400
    assert reply.json() == {"error": {"message": "Invalid Input Provided", "code": 2001,
                                      "errors": ["The until time cannot be before the since time."]}}
