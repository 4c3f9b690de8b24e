"""Card payments through a processor, behind a small gateway the services call.

:class:`StripeGateway` uses the official client (``stripe.StripeClient``); ``STRIPE_API_BASE``
points it at another server speaking Stripe's API (the test suite runs one locally). Services
never trust a webhook's payload for money: they fetch the object from the processor and
reconcile against its current state, so events can arrive late, twice or out of order.

Every call that creates something carries an idempotency key derived from the contribution, so
a retry after a crash (charge made, booking lost) returns the same charge instead of a second.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import stripe

from campaigns.errors import PaymentFailed


@dataclass(frozen=True, slots=True)
class Checkout:
    id: str
    url: str


@dataclass(frozen=True, slots=True)
class CheckoutState:
    """A hosted payment page as the processor sees it now."""

    id: str
    mode: str  # payment | setup
    status: str  # open | complete | expired
    reference: str | None
    payment_intent_id: str | None
    customer_id: str | None
    payment_method_id: str | None


@dataclass(frozen=True, slots=True)
class Payment:
    """A card payment as the processor sees it now. ``fee`` and ``fee_id`` come from the
    processor's balance transaction, once the money is received."""

    id: str
    status: str  # succeeded | requires_payment_method | requires_action | processing | canceled | ...
    amount: int
    amount_received: int
    currency: str
    reference: str | None
    fee: int = 0
    fee_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    amount: int
    status: str  # pending | succeeded | failed | canceled
    payment_intent_id: str | None


@dataclass(frozen=True, slots=True)
class Dispute:
    id: str
    payment_intent_id: str | None
    amount: int
    status: str  # warning_needs_response | needs_response | under_review | won | lost ...
    #: Money the processor took from the platform for this dispute, and the fee it charged.
    withdrawn: int
    fee: int
    #: Money given back when the dispute was won.
    reinstated: int


class Gateway(Protocol):
    """What the engine needs from a card processor."""

    def start_checkout(self, *, mode: str, reference: str, amount: int, currency: str, title: str,
                       email: str, success_url: str, cancel_url: str, locale: str, expires_at: int,
                       customer_id: str | None = None) -> Checkout: ...

    def checkout(self, checkout_id: str) -> CheckoutState: ...

    def charge_saved_card(self, *, reference: str, amount: int, currency: str, customer_id: str,
                          payment_method_id: str, key: str) -> Payment: ...

    def payment(self, payment_intent_id: str) -> Payment: ...

    def refund(self, *, payment_intent_id: str, amount: int, key: str, reference: str) -> Refund: ...

    def refunds(self, payment_intent_id: str) -> list[Refund]: ...

    def dispute(self, dispute_id: str) -> Dispute: ...

    def transfer(self, *, amount: int, currency: str, destination: str, key: str, campaign_id: int) -> str: ...

    def parse_event(self, payload: bytes, signature: str | None) -> dict[str, Any]: ...


class InvalidSignature(Exception):
    """A webhook whose signature does not verify, or whose timestamp is too old."""


def _reference(metadata: Mapping[str, Any] | None) -> str | None:
    """The contribution a processor object belongs to, from the metadata the engine set."""
    raw = (metadata or {}).get("contribution")
    return raw if isinstance(raw, str) and raw else None


def _id(value: Any) -> str | None:
    """An expandable field: an id, an expanded object, or nothing."""
    if value is None or isinstance(value, str):
        return value
    return value["id"]


def _plain(obj: Any) -> Any:
    return obj.to_dict() if hasattr(obj, "to_dict") else obj


class StripeGateway:
    """The gateway over Stripe's API, with the official client."""

    #: Stripe refuses a webhook signed more than this many seconds ago (replays).
    TOLERANCE = 300

    def __init__(self, secret_key: str, webhook_secret: str | None, api_base: str | None = None) -> None:
        options: dict[str, Any] = {"max_network_retries": 2}
        if api_base:
            options["base_addresses"] = {"api": api_base.rstrip("/")}
        self.client = stripe.StripeClient(secret_key, **options)
        self.webhook_secret = webhook_secret

    # -- hosted pages

    def start_checkout(self, *, mode: str, reference: str, amount: int, currency: str, title: str,
                       email: str, success_url: str, cancel_url: str, locale: str, expires_at: int,
                       customer_id: str | None = None) -> Checkout:
        metadata = {"contribution": reference}
        params: dict[str, Any] = {
            "mode": mode, "client_reference_id": reference, "metadata": metadata,
            "success_url": success_url, "cancel_url": cancel_url, "locale": locale, "expires_at": expires_at,
        }
        if customer_id:
            params["customer"] = customer_id
        else:
            params["customer_email"] = email
        if mode == "payment":
            params["line_items"] = [{"quantity": 1, "price_data": {
                "currency": currency.lower(), "unit_amount": amount, "product_data": {"name": title[:250]}}}]
            params["payment_intent_data"] = {"metadata": metadata}
        else:
            params["currency"] = currency.lower()
            params["setup_intent_data"] = {"metadata": metadata}
        session = self._call(self.client.v1.checkout.sessions.create, params,
                             {"idempotency_key": f"checkout-{reference}-{uuid.uuid4().hex}"})
        return Checkout(session["id"], session["url"])

    def checkout(self, checkout_id: str) -> CheckoutState:
        session = self._call(self.client.v1.checkout.sessions.retrieve, checkout_id,
                             {"expand": ["setup_intent"]})
        setup = session.get("setup_intent")
        payment_method = _id(setup.get("payment_method")) if isinstance(setup, Mapping) else None
        customer = _id(session.get("customer")) or (_id(setup.get("customer")) if isinstance(setup, Mapping) else None)
        return CheckoutState(
            id=session["id"], mode=session["mode"], status=session["status"],
            reference=_reference(session.get("metadata")),
            payment_intent_id=_id(session.get("payment_intent")), customer_id=customer,
            payment_method_id=payment_method,
        )

    # -- payments

    def _payment(self, intent: Any, error: stripe.StripeError | None = None) -> Payment:
        charge = intent.get("latest_charge")
        fee, fee_id = 0, None
        if isinstance(charge, Mapping) and isinstance(charge.get("balance_transaction"), Mapping):
            fee, fee_id = int(charge["balance_transaction"]["fee"]), charge["balance_transaction"]["id"]
        last_error = intent.get("last_payment_error") or {}
        return Payment(
            id=intent["id"], status=intent["status"], amount=int(intent["amount"]),
            amount_received=int(intent.get("amount_received") or 0), currency=str(intent["currency"]).upper(),
            reference=_reference(intent.get("metadata")), fee=fee, fee_id=fee_id,
            error_code=(getattr(error, "code", None) if error else None) or last_error.get("code"),
            error_message=(getattr(error, "user_message", None) if error else None) or last_error.get("message"),
        )

    def charge_saved_card(self, *, reference: str, amount: int, currency: str, customer_id: str,
                          payment_method_id: str, key: str) -> Payment:
        params = {"amount": amount, "currency": currency.lower(), "customer": customer_id,
                  "payment_method": payment_method_id, "off_session": True, "confirm": True,
                  "metadata": {"contribution": reference}}
        try:
            intent = _plain(self.client.v1.payment_intents.create(params, {"idempotency_key": key}))
        except stripe.CardError as error:
            intent = _plain(error.error.payment_intent) if error.error else None
            if intent is None:
                raise PaymentFailed(error.user_message or "the card was refused", field="payment_method") from None
            return self._payment(intent, error)
        except stripe.StripeError as error:
            raise PaymentFailed(f"the payment processor did not answer: {error.user_message or error}") from None
        return self.payment(intent["id"]) if intent["status"] == "succeeded" else self._payment(intent)

    def payment(self, payment_intent_id: str) -> Payment:
        intent = self._call(self.client.v1.payment_intents.retrieve, payment_intent_id,
                            {"expand": ["latest_charge.balance_transaction"]})
        return self._payment(intent)

    # -- refunds and disputes

    def refund(self, *, payment_intent_id: str, amount: int, key: str, reference: str) -> Refund:
        refund = self._call(self.client.v1.refunds.create,
                            {"payment_intent": payment_intent_id, "amount": amount,
                             "metadata": {"contribution": reference}},
                            {"idempotency_key": key})
        return Refund(refund["id"], int(refund["amount"]), refund["status"], _id(refund.get("payment_intent")))

    def refunds(self, payment_intent_id: str) -> list[Refund]:
        listed = self._call(self.client.v1.refunds.list, {"payment_intent": payment_intent_id, "limit": 100})
        return [Refund(r["id"], int(r["amount"]), r["status"], _id(r.get("payment_intent"))) for r in listed["data"]]

    def dispute(self, dispute_id: str) -> Dispute:
        dispute = self._call(self.client.v1.disputes.retrieve, dispute_id)
        moves = dispute.get("balance_transactions") or []
        withdrawn = sum(-int(t["amount"]) for t in moves if int(t["amount"]) < 0)
        reinstated = sum(int(t["amount"]) for t in moves if int(t["amount"]) > 0)
        fee = sum(int(t.get("fee") or 0) for t in moves)
        return Dispute(dispute["id"], _id(dispute.get("payment_intent")), int(dispute["amount"]), dispute["status"],
                       withdrawn, fee, reinstated)

    # -- payouts through Connect

    def transfer(self, *, amount: int, currency: str, destination: str, key: str, campaign_id: int) -> str:
        transfer = self._call(self.client.v1.transfers.create,
                              {"amount": amount, "currency": currency.lower(), "destination": destination,
                               "transfer_group": f"campaign-{campaign_id}",
                               "metadata": {"campaign_id": str(campaign_id)}},
                              {"idempotency_key": key})
        return str(transfer["id"])

    # -- webhooks

    def parse_event(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """The event if its signature verifies with the webhook secret and is recent; otherwise
        :class:`InvalidSignature`. Replays older than five minutes are refused."""
        if not self.webhook_secret or not signature:
            raise InvalidSignature("missing signature")
        try:
            event = stripe.Webhook.construct_event(payload, signature, self.webhook_secret, tolerance=self.TOLERANCE)
        except (stripe.SignatureVerificationError, ValueError) as error:
            raise InvalidSignature(str(error)) from None
        return _plain(event)

    # -- plumbing

    @staticmethod
    def _call(method: Any, *args: Any) -> dict[str, Any]:
        """Call the client; the answer as plain dicts (the client's objects are not mappings)."""
        try:
            return _plain(method(*args))
        except stripe.StripeError as error:
            raise PaymentFailed(f"the payment processor refused: {error.user_message or error}") from None
