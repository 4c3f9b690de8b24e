"""What links people to a campaign beyond money: its news, its followers, its public backers."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campaigns.contributions import COUNTED
from campaigns.errors import InvalidCampaign
from campaigns.lifecycle import PUBLIC
from campaigns.models import Campaign, CampaignUpdate, Contribution, Follower, Status


def post_update(session: Session, campaign: Campaign, *, author_id: int, title: str, body: str,
                now: datetime | None = None) -> CampaignUpdate:
    """News from the holder of a public campaign. The caller mails it to :func:`update_recipients`."""
    if Status(campaign.status) not in PUBLIC:
        raise InvalidCampaign("news are posted once the campaign is public", field="status")
    title, body = (title or "").strip(), (body or "").strip()
    if not 3 <= len(title) <= 140:
        raise InvalidCampaign("a title has 3 to 140 characters", field="title")
    if not 1 <= len(body) <= 20_000:
        raise InvalidCampaign("the news needs a text (at most 20,000 characters)", field="body")
    update = CampaignUpdate(campaign_id=campaign.id, author_id=author_id, title=title, body=body,
                            published_at=now or datetime.now(UTC))
    session.add(update)
    session.flush()
    return update


def updates_of(session: Session, campaign_id: int, limit: int = 50) -> list[CampaignUpdate]:
    return list(session.scalars(select(CampaignUpdate).where(CampaignUpdate.campaign_id == campaign_id)
                                .order_by(CampaignUpdate.published_at.desc(), CampaignUpdate.id.desc()).limit(limit)))


def update_recipients(session: Session, campaign_id: int) -> set[int]:
    """People who asked for the news: contributors who opted in, and followers."""
    backers = session.scalars(select(Contribution.contributor_id).where(
        Contribution.campaign_id == campaign_id, Contribution.wants_updates.is_(True),
        Contribution.status.in_([s.value for s in COUNTED])))
    followers = session.scalars(select(Follower.user_id).where(Follower.campaign_id == campaign_id))
    return set(backers) | set(followers)


def follow(session: Session, campaign_id: int, user_id: int, *, now: datetime | None = None) -> bool:
    """Follow a campaign; False when already following."""
    try:
        with session.begin_nested():
            session.add(Follower(campaign_id=campaign_id, user_id=user_id, created_at=now or datetime.now(UTC)))
    except IntegrityError:
        return False
    return True


def unfollow(session: Session, campaign_id: int, user_id: int) -> None:
    session.execute(delete(Follower).where(Follower.campaign_id == campaign_id, Follower.user_id == user_id))


def is_following(session: Session, campaign_id: int, user_id: int) -> bool:
    return session.scalar(select(Follower.id).where(Follower.campaign_id == campaign_id,
                                                    Follower.user_id == user_id)) is not None


def backers(session: Session, campaign_id: int, *, limit: int = 100) -> list[Contribution]:
    """Contributions whose money is with the campaign, newest first: the public list shows the
    names people chose (or "anonymous"), never amounts of named people's gifts unless public."""
    return list(session.scalars(select(Contribution).where(
        Contribution.campaign_id == campaign_id, Contribution.status.in_([s.value for s in COUNTED]))
        .order_by(Contribution.id.desc()).limit(limit)))
