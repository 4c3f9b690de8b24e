"""The bare baseline of ``bench/donations_http.py``: a gift over HTTP with nothing but psycopg.

A minimal WSGI application, served by the same gunicorn settings as the real one. It answers
``POST /api/v1/campaigns/<id>/contributions`` (``{"amount": int, "payment_method": "transfer"}``,
a bearer token, an ``Idempotency-Key``) for the one campaign it is configured for. It writes the
same rows as the real endpoint and makes the same refusals, with the least code: in one
transaction, one indexed SELECT of the token by its SHA-256 digest with its person (a revoked,
expired or disabled one is refused); the idempotency record claimed (``INSERT ... ON CONFLICT DO
NOTHING``; a key already answered replays the stored answer, one used for another request is
refused with 409); the campaign's status, deadline and currency (a campaign not live or past its
deadline is refused with 422); the contribution row, the two postings of its pending entry, the
entry row that seals them; the response stored in the idempotency record; the two balance shards
(bank and campaign fund, in account order); commit; 201 with a small JSON body. No framework, no
ORM, no check of the ledger accounts, no mail: what the real endpoint costs beyond this is the
engine's overhead.

``BARE_MINIMAL=1`` gives the earlier, smaller baseline, kept for comparison: the token read
alone, no idempotency record and no campaign check.

Configured by the environment (the benchmark sets it): ``BARE_DATABASE_URL`` (a psycopg conninfo),
``BARE_CAMPAIGN_ID``, ``BARE_FUND_ACCOUNT_ID``, ``BARE_FUND_SHARDS``, ``BARE_BANK_ACCOUNT_ID``,
``BARE_CURRENCY``, ``BARE_MINIMAL``. Each gunicorn thread keeps one connection of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import psycopg

CONNINFO = os.environ.get("BARE_DATABASE_URL", "")
CAMPAIGN_ID = int(os.environ.get("BARE_CAMPAIGN_ID", "0"))
FUND = int(os.environ.get("BARE_FUND_ACCOUNT_ID", "0"))
FUND_SHARDS = int(os.environ.get("BARE_FUND_SHARDS", "1"))
BANK = int(os.environ.get("BARE_BANK_ACCOUNT_ID", "0"))
CURRENCY = os.environ.get("BARE_CURRENCY", "EUR")
PATH = f"/api/v1/campaigns/{CAMPAIGN_ID}/contributions"
REFERENCE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
MAX_AMOUNT = 100_000_000

MINIMAL = os.environ.get("BARE_MINIMAL") == "1"
PENDING_STATUS = 0

SELECT_TOKEN = "SELECT user_id, revoked_at, expires_at FROM api_tokens WHERE token_hash = %s"
SELECT_TOKEN_AND_PERSON = (
    "SELECT t.user_id, t.revoked_at, t.expires_at, u.disabled_at FROM api_tokens t "
    "JOIN users u ON u.id = t.user_id WHERE t.token_hash = %s"
)
CLAIM_KEY = (
    "INSERT INTO idempotency_records (principal, key, method, path, request_hash, status_code, content_type, "
    "response_body, created_at) VALUES (%s, %s, 'POST', %s, %s, 0, '', '', %s) "
    "ON CONFLICT (principal, key) DO NOTHING RETURNING id"
)
SELECT_ANSWER = (
    "SELECT request_hash, status_code, content_type, response_body FROM idempotency_records "
    "WHERE principal = %s AND key = %s"
)
STORE_ANSWER = "UPDATE idempotency_records SET status_code = %s, content_type = %s, response_body = %s WHERE id = %s"
SELECT_CAMPAIGN = "SELECT status, deadline_at, currency FROM campaigns WHERE id = %s"
INSERT_CONTRIBUTION = (
    "INSERT INTO contributions (campaign_id, contributor_id, amount, currency, payment_method, status, reference, "
    "anonymous, message, shipping_address, fulfilment, wants_updates, paid_amount, refunded_amount, fee_amount, "
    "pending_entry_id, created_at, updated_at) "
    "VALUES (%s, %s, %s, %s, 'transfer', 'pending', %s, false, '', '', 'none', true, 0, 0, 0, %s, %s, %s) "
    "RETURNING id"
)
INSERT_POSTING = "INSERT INTO ledger_postings (entry_id, account_id, amount, currency) VALUES (%s, %s, %s, %s)"
INSERT_ENTRY = (
    "INSERT INTO ledger_entries (id, phase, kind, effective_on, memo, ref_type, ref_id, idempotency_key, "
    "request_hash, created_at) VALUES (%s, 'pending', 'gift.transfer', %s, %s, 'contribution', %s, %s, %s, %s)"
)
UPDATE_SHARD = (
    "UPDATE ledger_balances SET pending_debits = pending_debits + %s, pending_credits = pending_credits + %s "
    "WHERE account_id = %s AND shard = %s"
)

_local = threading.local()
StartResponse = Callable[..., Any]


def _connection() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg.connect(CONNINFO)
    return conn


def _entry_id() -> uuid.UUID:
    """Time-ordered, like the engine's entry ids (48 bits of milliseconds, then random bits)."""
    raw = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return uuid.UUID(bytes=bytes(raw))


class Refusal(Exception):
    def __init__(self, status: str, title: str) -> None:
        super().__init__(title)
        self.status, self.title = status, title


class Replay(Exception):
    def __init__(self, status: int, content_type: str, body: str) -> None:
        super().__init__(status)
        self.status, self.content_type, self.body = status, content_type, body


def _answer(start_response: StartResponse, status: str, body: dict[str, Any]) -> Iterable[bytes]:
    return _raw(start_response, status, "application/json", json.dumps(body).encode())


def _raw(start_response: StartResponse, status: str, content_type: str, data: bytes) -> Iterable[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(data)))])
    return [data]


def _contributor(cur: psycopg.Cursor, authorization: str) -> int | None:
    scheme, _, secret = authorization.partition(" ")
    if scheme != "Bearer" or not secret.startswith("frp_") or len(secret) > 200:
        return None
    digest = hashlib.sha256(secret.encode()).digest()
    row = cur.execute(SELECT_TOKEN if MINIMAL else SELECT_TOKEN_AND_PERSON, (digest,)).fetchone()
    if row is None or row[0] is None or row[1] is not None:
        return None
    if row[2] is not None and row[2] <= datetime.now(UTC):
        return None
    if not MINIMAL and row[3] is not None:  # a disabled person
        return None
    return row[0]


def _claim(cur: psycopg.Cursor, principal: str, key: str, fingerprint: str) -> int:
    """The idempotency record of this request, claimed; a key already answered replays its answer."""
    claimed = cur.execute(CLAIM_KEY, (principal, key, PATH, fingerprint, datetime.now(UTC))).fetchone()
    if claimed is not None:
        return claimed[0]
    stored = cur.execute(SELECT_ANSWER, (principal, key)).fetchone()
    if stored is None or stored[1] == PENDING_STATUS:
        raise Refusal("409 Conflict", "a concurrent request holds this Idempotency-Key")
    if stored[0] != fingerprint:
        raise Refusal("409 Conflict", "this Idempotency-Key was used with another request")
    raise Replay(stored[1], stored[2], stored[3])


def _check_campaign(cur: psycopg.Cursor, now: datetime) -> None:
    row = cur.execute(SELECT_CAMPAIGN, (CAMPAIGN_ID,)).fetchone()
    if row is None:
        raise Refusal("404 Not Found", "no such campaign")
    status, deadline_at, currency = row
    if status != "live" or deadline_at <= now or currency != CURRENCY:
        raise Refusal("422 Unprocessable Entity", "this campaign does not take contributions now")


def _gift(cur: psycopg.Cursor, contributor_id: int, amount: int, now: datetime) -> dict[str, Any]:
    entry_id = _entry_id()
    reference = "DON-" + "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(8))
    contribution_id = cur.execute(INSERT_CONTRIBUTION, (CAMPAIGN_ID, contributor_id, amount, CURRENCY, reference,
                                                        entry_id, now, now)).fetchone()[0]
    cur.executemany(INSERT_POSTING, [(entry_id, BANK, amount, CURRENCY), (entry_id, FUND, -amount, CURRENCY)])
    key = f"contribution:{contribution_id}:expected"
    memo = f"{reference}: transfer awaited"
    request = json.dumps({"amount": amount, "contribution": contribution_id, "memo": memo}, sort_keys=True)
    cur.execute(INSERT_ENTRY, (entry_id, now.date(), memo, str(contribution_id), key,
                               hashlib.sha256(request.encode()).hexdigest(), now))
    return {"id": contribution_id, "campaign_id": CAMPAIGN_ID, "reference": reference, "amount": amount,
            "currency": CURRENCY, "payment_method": "transfer", "status": "pending",
            "created_at": now.isoformat()}


def _move_balances(cur: psycopg.Cursor, amount: int) -> None:
    shards = sorted([(BANK, 0, amount, 0), (FUND, random.randrange(FUND_SHARDS), 0, amount)])
    cur.executemany(UPDATE_SHARD, [(debits, credits, account, shard) for account, shard, debits, credits in shards])


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    if environ.get("PATH_INFO") != PATH:
        return _answer(start_response, "404 Not Found", {"title": "Not Found"})
    if environ.get("REQUEST_METHOD") != "POST":
        return _answer(start_response, "405 Method Not Allowed", {"title": "Method Not Allowed"})
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    amount = body.get("amount") if isinstance(body, dict) else None
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT or body.get("payment_method") != "transfer":
        return _answer(start_response, "422 Unprocessable Entity", {"title": "Unprocessable Entity"})
    key = environ.get("HTTP_IDEMPOTENCY_KEY")
    if key is not None and not (0 < len(key) <= 200 and key.isprintable()):
        return _answer(start_response, "422 Unprocessable Entity", {"title": "Idempotency-Key"})
    conn = _connection()
    try:
        with conn.cursor() as cur:
            contributor_id = _contributor(cur, environ.get("HTTP_AUTHORIZATION", ""))
            if contributor_id is None:
                conn.rollback()
                return _answer(start_response, "401 Unauthorized", {"title": "Unauthorized"})
            now = datetime.now(UTC)
            record = None
            if not MINIMAL:
                if key is not None:
                    fingerprint = hashlib.sha256(b"\n".join([b"POST", PATH.encode(), environ.get(
                        "QUERY_STRING", "").encode(), raw])).hexdigest()
                    record = _claim(cur, f"user:{contributor_id}", key, fingerprint)
                _check_campaign(cur, now)
            answer = _gift(cur, contributor_id, amount, now)
            data = json.dumps(answer).encode()
            if record is not None:
                cur.execute(STORE_ANSWER, (201, "application/json", data.decode(), record))
            _move_balances(cur, amount)
        conn.commit()
    except Refusal as refusal:
        conn.rollback()
        return _answer(start_response, refusal.status, {"title": refusal.title})
    except Replay as replay:
        conn.rollback()
        return _raw(start_response, f"{replay.status} Replayed", replay.content_type, replay.body.encode())
    except BaseException:
        if not conn.closed:
            conn.rollback()
        raise
    return _raw(start_response, "201 Created", "application/json", data)
