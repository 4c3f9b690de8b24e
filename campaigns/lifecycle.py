"""The campaign lifecycle as one transition table.

Pure: it says which action leads from which status to which, and who may take it. Services
apply it and record every step. Reading the table is the whole specification:

    draft --submit--> submitted --approve--> live --succeed--> succeeded --pay_out--> paid_out
                          |                   |
                          +--reject--> rejected --reopen--> draft
                                              +--fail--> failed
    draft, submitted, live --cancel--> cancelled
"""

from __future__ import annotations

import enum

from campaigns.errors import TransitionNotAllowed
from campaigns.models import Status


class Actor(enum.StrEnum):
    """Who takes an action: the project holder, an admin, a treasurer, or the engine itself
    (settlement at the deadline)."""

    HOLDER = "holder"
    ADMIN = "admin"
    TREASURER = "treasurer"
    SYSTEM = "system"


TRANSITIONS: dict[tuple[Status, str], tuple[Status, frozenset[Actor]]] = {
    (Status.DRAFT, "submit"): (Status.SUBMITTED, frozenset({Actor.HOLDER})),
    (Status.SUBMITTED, "approve"): (Status.LIVE, frozenset({Actor.ADMIN})),
    (Status.SUBMITTED, "reject"): (Status.REJECTED, frozenset({Actor.ADMIN})),
    (Status.REJECTED, "reopen"): (Status.DRAFT, frozenset({Actor.HOLDER})),
    (Status.DRAFT, "cancel"): (Status.CANCELLED, frozenset({Actor.HOLDER, Actor.ADMIN})),
    (Status.SUBMITTED, "cancel"): (Status.CANCELLED, frozenset({Actor.HOLDER, Actor.ADMIN})),
    (Status.LIVE, "cancel"): (Status.CANCELLED, frozenset({Actor.ADMIN})),
    (Status.LIVE, "succeed"): (Status.SUCCEEDED, frozenset({Actor.SYSTEM})),
    (Status.LIVE, "fail"): (Status.FAILED, frozenset({Actor.SYSTEM})),
    (Status.SUCCEEDED, "pay_out"): (Status.PAID_OUT, frozenset({Actor.TREASURER, Actor.ADMIN})),
}

#: Statuses in which the holder may still edit the campaign's terms.
EDITABLE = frozenset({Status.DRAFT})
#: Statuses in which the campaign accepts contributions.
OPEN = frozenset({Status.LIVE})
#: Statuses shown to the public.
PUBLIC = frozenset({Status.LIVE, Status.SUCCEEDED, Status.FAILED, Status.PAID_OUT})


def next_status(current: Status | str, action: str, actor: Actor) -> Status:
    """The status ``action`` leads to, or :class:`TransitionNotAllowed` naming why not."""
    found = TRANSITIONS.get((Status(current), action))
    if found is None:
        raise TransitionNotAllowed(f"a {current} campaign cannot {action.replace('_', ' ')}", field="status")
    target, actors = found
    if actor not in actors:
        raise TransitionNotAllowed(f"{actor} may not {action.replace('_', ' ')} a campaign", field="status")
    return target


def actions_from(current: Status | str, actor: Actor) -> list[str]:
    """The actions ``actor`` may take now: what a page offers as buttons."""
    return sorted(action for (status, action), (_, actors) in TRANSITIONS.items()
                  if status == Status(current) and actor in actors)
