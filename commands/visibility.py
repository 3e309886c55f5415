"""Who may see what a private incident is about (its title, its service): bot.policy decides,
as for every act on an incident (its channel's members, its commander, whoever acknowledged it);
everyone else sees only that it exists. Used where incidents are listed outside their channel."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bot.models import Incident
from bot.policy import Act, Policy
from commands.middleware import who_asks
from integrations.slack import SlackClient

__all__ = ["hidden_from"]


async def hidden_from(slack: SlackClient, policy: Policy, user: str, incidents: Sequence[Incident]) -> set[int]:
    """The ids of the private incidents among `incidents` whose details `user` may not see. Slack
    unable to say whether they are in the channel: hidden (fail closed)."""
    private = [incident for incident in incidents if incident.private]
    requesters = await asyncio.gather(*(who_asks(slack, user, policy.deciding_channel(i)) for i in private))
    return {incident.id for incident, requester in zip(private, requesters, strict=True)
            if incident.id is not None and not policy.decide(Act.SEE_PRIVATE, requester, incident).allowed}
