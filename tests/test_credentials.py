"""Bearer tokens resolve to their person and every one of the person's roles, in one query; the
person's ORM object is loaded only when a view asks for it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import event

from fundraising import credentials, people
from fundraising.models import Role


def test_bearer_resolves_person_and_all_roles_in_one_statement(session) -> None:
    user = people.register_user(session, email="multi@example.org", password="correct horse battery staple",
                                display_name="Multi", roles=(Role.HOLDER, Role.CONTRIBUTOR, Role.TREASURER),
                                confirmed=True)
    _, secret = credentials.create_personal_token(session, user)
    session.flush()
    session.expunge_all()  # nothing in the identity map: the person and roles come from the query
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(session.get_bind(), "before_cursor_execute", listener)
    try:
        principal = credentials.resolve_bearer(session, secret)
        assert principal is not None and principal.kind == "user"
        assert (principal.id, principal.email) == (user.id, "multi@example.org")
        assert principal.roles == {Role.HOLDER, Role.CONTRIBUTOR, Role.TREASURER}
        assert len(statements) == 1
        assert principal.user.id == user.id  # on demand: the person and their grants, in one more
        assert principal.user.roles == principal.roles
        assert principal.user is principal.user
    finally:
        event.remove(session.get_bind(), "before_cursor_execute", listener)
    assert len(statements) == 2


def test_revoked_and_unknown_tokens_resolve_to_nobody(session) -> None:
    user = people.register_user(session, email="gone@example.org", password="correct horse battery staple",
                                display_name="Gone", confirmed=True)
    token, secret = credentials.create_personal_token(session, user)
    assert credentials.resolve_bearer(session, secret + "x") is None
    token.revoked_at = datetime.now(UTC)
    session.flush()
    assert credentials.resolve_bearer(session, secret) is None


def test_disabled_person_resolves_to_nobody(session) -> None:
    user = people.register_user(session, email="off@example.org", password="correct horse battery staple",
                                display_name="Off", confirmed=True)
    _, secret = credentials.create_personal_token(session, user)
    assert credentials.resolve_bearer(session, secret) is not None
    user.disabled_at = datetime.now(UTC)
    session.flush()
    assert credentials.resolve_bearer(session, secret) is None
