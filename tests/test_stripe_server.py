"""The local Stripe server speaks Stripe's API as the official client expects it (no mocks: real HTTP)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

from tests.stripe_server import (
    CARD_ATTACH_THEN_DECLINE,
    CARD_AUTHENTICATE_ALWAYS,
    CARD_AUTHENTICATE_ON_SESSION,
    CARD_DECLINED,
    CARD_INSUFFICIENT_FUNDS,
    StripeServer,
)


@pytest.fixture
def server() -> Iterator[StripeServer]:
    server = StripeServer().start()
    yield server
    server.stop()


@pytest.fixture
def client(server: StripeServer) -> stripe.StripeClient:
    return stripe.StripeClient(server.api_key, base_addresses={"api": server.url}, max_network_retries=0)


class _Shop(BaseHTTPRequestHandler):
    """Stands for the engine's pages that Checkout redirects to."""

    visited: list[str]

    def do_GET(self) -> None:
        type(self).visited.append(self.path)
        body = b"back at the shop"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def shop() -> Iterator[tuple[str, list[str]]]:
    visited: list[str] = []
    handler = type("Shop", (_Shop,), {"visited": visited})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", visited
    httpd.shutdown()
    httpd.server_close()


def payment_session(client: stripe.StripeClient, amount: int = 2000, **extra: Any) -> stripe.checkout.Session:
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [{"price_data": {"currency": "eur", "unit_amount": amount,
                                       "product_data": {"name": "Contribution"}}, "quantity": 1}],
        "success_url": "http://127.0.0.1:9/done?session={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://127.0.0.1:9/cancelled",
        "payment_intent_data": {"metadata": {"contribution_id": "5"}},
        "metadata": {"contribution_id": "5"},
        **extra,
    }
    return client.v1.checkout.sessions.create(params=params)  # type: ignore[arg-type]


def paid_intent(server: StripeServer, client: stripe.StripeClient, amount: int = 2000) -> str:
    session = payment_session(client, amount)
    return server.complete_checkout(session.id)["payment_intent"]


def saved_card(server: StripeServer, client: stripe.StripeClient, card: str) -> tuple[str, str]:
    """A customer and a PaymentMethod saved for off-session use through a setup-mode Checkout."""
    session = client.v1.checkout.sessions.create(params={
        "mode": "setup", "currency": "eur", "customer_email": "ada@example.org",
        "success_url": "http://127.0.0.1:9/ok", "setup_intent_data": {"metadata": {"pledge_id": "7"}}})
    done = server.complete_checkout(session.id, card)
    if card in (CARD_AUTHENTICATE_ALWAYS, CARD_AUTHENTICATE_ON_SESSION):  # saving it goes through 3-D Secure
        assert done["status"] == "open"
        server.authenticate(session.id)
        done = server.objects("checkout.session")[session.id]
    assert done["status"] == "complete"
    setup = client.v1.setup_intents.retrieve(done["setup_intent"])
    return done["customer"], str(setup.payment_method)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


# --------------------------------------------------------------------------- checkout


def test_payment_checkout_completes_with_stripes_fee(server: StripeServer, client: stripe.StripeClient) -> None:
    session = payment_session(client, 2000, client_reference_id="c-5", customer_email="ada@example.org")
    assert session.id.startswith("cs_test_")
    assert (session.status, session.payment_status, session.payment_intent) == ("open", "unpaid", None)
    assert (session.amount_total, session.currency, session.url) == (2000, "eur", f"{server.url}/pay/{session.id}")
    assert session.livemode is False and session.metadata.to_dict() == {"contribution_id": "5"}

    done = server.complete_checkout(session.id)
    assert (done["status"], done["payment_status"]) == ("complete", "paid")

    intent = client.v1.payment_intents.retrieve(
        done["payment_intent"], params={"expand": ["latest_charge.balance_transaction"]})
    assert intent.id.startswith("pi_")
    assert (intent.status, intent.amount, intent.amount_received, intent.currency) == ("succeeded", 2000, 2000, "eur")
    assert intent.metadata.to_dict() == {"contribution_id": "5"}
    charge = intent.latest_charge
    assert isinstance(charge, stripe.Charge)
    assert (charge.paid, charge.captured, charge.amount, charge.amount_refunded) == (True, True, 2000, 0)
    assert (charge.refunded, charge.disputed, charge.payment_intent) == (False, False, intent.id)
    txn = charge.balance_transaction
    assert isinstance(txn, stripe.BalanceTransaction)
    assert (txn.amount, txn.fee, txn.net) == (2000, 55, 1945)  # 1.5 % of 2000 + 25
    assert [(d.type, d.amount) for d in txn.fee_details] == [("stripe_fee", 55)]
    assert server.fee(1010) == 40  # 15.15 rounds half up to 15

    assert types(server.pending) == ["payment_intent.succeeded", "charge.succeeded", "checkout.session.completed"]
    completed = server.pending[-1]["data"]["object"]
    assert completed["client_reference_id"] == "c-5" and completed["payment_intent"] == intent.id


def test_amount_total_is_unit_amount_times_quantity(client: stripe.StripeClient) -> None:
    session = client.v1.checkout.sessions.create(params={
        "mode": "payment", "line_items": [
            {"price_data": {"currency": "eur", "unit_amount": 350, "product_data": {"name": "Seed"}}, "quantity": 3}],
    })
    assert session.amount_total == 1050
    listed = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["line_items"]})
    assert [(item.quantity, item.amount_total) for item in listed.line_items.data] == [(3, 1050)]  # type: ignore[union-attr]


def test_setup_checkout_then_off_session_charge(server: StripeServer, client: stripe.StripeClient) -> None:
    customer, method_id = saved_card(server, client, "4242424242424242")
    assert customer.startswith("cus_") and method_id.startswith("pm_")
    assert types(server.pending) == ["setup_intent.succeeded", "checkout.session.completed"]
    setup = server.pending[0]["data"]["object"]
    assert (setup["status"], setup["usage"], setup["metadata"]) == ("succeeded", "off_session", {"pledge_id": "7"})
    method = client.v1.payment_methods.retrieve(method_id)
    assert (method.type, method.customer, method.card.last4, method.card.brand) == ("card", customer, "4242", "visa")
    assert client.v1.customers.retrieve(customer).email == "ada@example.org"
    server.pending.clear()

    intent = client.v1.payment_intents.create(params={
        "amount": 1500, "currency": "eur", "customer": customer, "payment_method": method_id, "confirm": True,
        "off_session": True, "metadata": {"pledge_id": "7"}})
    assert (intent.status, intent.amount_received, intent.metadata.to_dict()) == ("succeeded", 1500, {"pledge_id": "7"})
    assert types(server.pending) == ["payment_intent.succeeded", "charge.succeeded"]


def test_card_needing_authentication_every_time_fails_off_session(server: StripeServer,
                                                                  client: stripe.StripeClient) -> None:
    customer, method_id = saved_card(server, client, CARD_AUTHENTICATE_ALWAYS)
    with pytest.raises(stripe.CardError) as caught:
        client.v1.payment_intents.create(params={
            "amount": 1500, "currency": "eur", "customer": customer, "payment_method": method_id, "confirm": True,
            "off_session": True})
    error = caught.value
    assert (error.http_status, error.code) == (402, "authentication_required")
    assert error.error is not None and error.error.decline_code == "authentication_required"
    intent_id = error.error.payment_intent.id  # type: ignore[union-attr]
    assert error.error.payment_intent.status == "requires_payment_method"  # type: ignore[union-attr]
    assert error.error.payment_method.id == method_id  # type: ignore[union-attr]
    intent = client.v1.payment_intents.retrieve(intent_id)
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error is not None and intent.last_payment_error.code == "authentication_required"
    assert server.pending[-1]["type"] == "payment_intent.payment_failed"


def test_card_authenticated_once_charges_off_session(server: StripeServer, client: stripe.StripeClient) -> None:
    customer, method_id = saved_card(server, client, CARD_AUTHENTICATE_ON_SESSION)
    intent = client.v1.payment_intents.create(params={
        "amount": 1500, "currency": "eur", "customer": customer, "payment_method": method_id, "confirm": True,
        "off_session": True})
    assert intent.status == "succeeded"


@pytest.mark.parametrize(("card", "decline_code", "message"), [
    (CARD_ATTACH_THEN_DECLINE, "generic_decline", "Your card was declined."),
    (CARD_INSUFFICIENT_FUNDS, "insufficient_funds", "Your card has insufficient funds."),
])
def test_declined_cards_off_session(server: StripeServer, client: stripe.StripeClient, card: str, decline_code: str,
                                    message: str) -> None:
    customer, method_id = saved_card(server, client, card)  # both attach fine
    server.pending.clear()
    with pytest.raises(stripe.CardError) as caught:
        client.v1.payment_intents.create(params={
            "amount": 1500, "currency": "eur", "customer": customer, "payment_method": method_id, "confirm": True,
            "off_session": True})
    assert caught.value.code == "card_declined"
    assert caught.value.error is not None and caught.value.error.decline_code == decline_code
    assert caught.value.user_message == message
    assert caught.value.error.payment_intent.status == "requires_payment_method"  # type: ignore[union-attr]
    assert types(server.pending) == ["payment_intent.payment_failed"]


def test_declined_card_on_checkout_keeps_the_session_open(server: StripeServer, client: stripe.StripeClient) -> None:
    session = payment_session(client)
    assert server.complete_checkout(session.id, CARD_DECLINED)["status"] == "open"
    assert server.checkout_error(session.id) == "Your card was declined."
    assert types(server.pending) == ["payment_intent.payment_failed"]
    assert server.complete_checkout(session.id)["status"] == "complete"  # another card, same PaymentIntent
    assert len(server.objects("payment_intent")) == 1

    setup = client.v1.checkout.sessions.create(params={"mode": "setup", "currency": "eur"})
    assert server.complete_checkout(setup.id, CARD_DECLINED)["status"] == "open"


def test_three_d_secure_on_checkout(server: StripeServer, client: stripe.StripeClient) -> None:
    session = payment_session(client)
    assert server.complete_checkout(session.id, CARD_AUTHENTICATE_ON_SESSION)["status"] == "open"
    failed = server.authenticate(session.id, succeed=False)
    assert failed["status"] == "requires_payment_method"
    assert failed["last_payment_error"]["code"] == "payment_intent_authentication_failure"
    assert server.objects("checkout.session")[session.id]["status"] == "open"

    server.complete_checkout(session.id, CARD_AUTHENTICATE_ALWAYS)
    intent = server.authenticate(session.id)
    assert intent["status"] == "succeeded"
    assert server.objects("checkout.session")[session.id]["payment_intent"] == intent["id"]
    assert types(server.pending)[-3:] == ["payment_intent.succeeded", "charge.succeeded",
                                          "checkout.session.completed"]


def test_expire_checkout(server: StripeServer, client: stripe.StripeClient) -> None:
    first, second = payment_session(client), payment_session(client)
    assert server.expire_checkout(first.id)["status"] == "expired"
    assert client.v1.checkout.sessions.expire(second.id).status == "expired"
    assert types(server.pending) == ["checkout.session.expired", "checkout.session.expired"]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.expire(second.id)


# --------------------------------------------------------------------------- idempotency, errors, expand


def test_idempotent_replay_and_key_reuse(server: StripeServer, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(params={"email": "a@example.org"})
    params: dict[str, Any] = {"amount": 1000, "currency": "eur", "customer": customer.id, "metadata": {"n": "1"}}
    first = client.v1.payment_intents.create(params=params, options={"idempotency_key": "key-1"})  # type: ignore[arg-type]
    again = client.v1.payment_intents.create(params=params, options={"idempotency_key": "key-1"})  # type: ignore[arg-type]
    assert again.id == first.id
    assert len(server.objects("payment_intent")) == 1
    assert again.last_response.headers["Idempotent-Replayed"] == "true"

    with pytest.raises(stripe.IdempotencyError) as caught:
        client.v1.payment_intents.create(params={**params, "amount": 1001},  # type: ignore[arg-type]
                                         options={"idempotency_key": "key-1"})
    assert caught.value.http_status == 400
    assert caught.value.error is not None and caught.value.error.type == "idempotency_error"


def test_card_errors_are_replayed_too(server: StripeServer, client: stripe.StripeClient) -> None:
    customer, method_id = saved_card(server, client, CARD_INSUFFICIENT_FUNDS)
    params: dict[str, Any] = {"amount": 1000, "currency": "eur", "customer": customer, "payment_method": method_id,
                              "confirm": True, "off_session": True}
    errors = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as caught:
            client.v1.payment_intents.create(params=params, options={"idempotency_key": "charge-9"})  # type: ignore[arg-type]
        errors.append(caught.value.error.payment_intent.id)  # type: ignore[union-attr]
    assert errors[0] == errors[1]


def test_api_key_is_required(server: StripeServer) -> None:
    with pytest.raises(stripe.AuthenticationError):
        stripe.StripeClient("sk_test_wrong", base_addresses={"api": server.url}).v1.customers.create()
    request = urllib.request.Request(f"{server.url}/v1/customers", data=b"email=a%40b.c", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    assert caught.value.code == 401
    assert json.load(caught.value)["error"]["type"] == "invalid_request_error"


def test_parameter_errors_name_the_parameter(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.create(params={"currency": "eur"})  # type: ignore[typeddict-item]
    assert (caught.value.http_status, caught.value.code, caught.value.param) == (400, "parameter_missing", "amount")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.create(params={"mode": "payment", "line_items": [
            {"price_data": {"currency": "eur", "unit_amount": "lots", "product_data": {"name": "x"}},
             "quantity": 1}]})  # type: ignore[typeddict-item]
    assert (caught.value.code, caught.value.param) == ("parameter_invalid_integer",
                                                       "line_items[0][price_data][unit_amount]")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.create(params={"amount": 1000, "currency": "eur", "colour": "red"})  # type: ignore[typeddict-unknown-key]
    assert (caught.value.code, caught.value.param) == ("parameter_unknown", "colour")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.create(params={"amount": 10, "currency": "eur"})
    assert caught.value.code == "amount_too_small"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.retrieve("pi_nothing")
    assert (caught.value.http_status, caught.value.code) == (404, "resource_missing")


def test_expand(server: StripeServer, client: stripe.StripeClient) -> None:
    session = payment_session(client)
    server.complete_checkout(session.id)
    plain = client.v1.checkout.sessions.retrieve(session.id)
    assert isinstance(plain.payment_intent, str)
    expanded = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["payment_intent"]})
    assert isinstance(expanded.payment_intent, stripe.PaymentIntent)
    assert isinstance(expanded.payment_intent.latest_charge, str)
    charge = client.v1.charges.retrieve(expanded.payment_intent.latest_charge,
                                        params={"expand": ["balance_transaction", "payment_method"]})
    assert charge.balance_transaction.fee == 55  # type: ignore[union-attr]
    assert charge.payment_method.card.last4 == "4242"  # type: ignore[union-attr]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.charges.retrieve(charge.id, params={"expand": ["amount"]})


def test_fifty_concurrent_requests(server: StripeServer, client: stripe.StripeClient) -> None:
    def create(n: int) -> str:
        return client.v1.customers.create(params={"email": f"c{n}@example.org", "metadata": {"n": str(n)}}).id

    with ThreadPoolExecutor(max_workers=50) as pool:
        ids = list(pool.map(create, range(50)))
    assert len(set(ids)) == 50
    stored = server.objects("customer")
    assert sorted(int(stored[i]["metadata"]["n"]) for i in ids) == list(range(50))


# --------------------------------------------------------------------------- refunds, disputes, transfers


def test_refunds_partial_then_full_then_refused(server: StripeServer, client: stripe.StripeClient) -> None:
    intent_id = paid_intent(server, client, 2000)
    server.pending.clear()
    partial = client.v1.refunds.create(params={"payment_intent": intent_id, "amount": 500,
                                               "metadata": {"reason": "partial"}})
    assert (partial.status, partial.amount, partial.payment_intent) == ("succeeded", 500, intent_id)
    assert client.v1.balance_transactions.retrieve(str(partial.balance_transaction)).amount == -500
    charge = client.v1.charges.retrieve(str(partial.charge))
    assert (charge.amount_refunded, charge.refunded) == (500, False)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"payment_intent": intent_id, "amount": 1501})
    assert (caught.value.code, caught.value.param) == ("amount_too_large", "amount")

    rest = client.v1.refunds.create(params={"charge": charge.id})
    assert rest.amount == 1500
    assert client.v1.charges.retrieve(charge.id).refunded is True
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"payment_intent": intent_id, "amount": 1})
    assert caught.value.code == "charge_already_refunded"

    assert types(server.pending) == ["refund.created", "charge.refunded"] * 2
    assert server.pending[1]["data"]["object"]["amount_refunded"] == 500  # snapshot at that moment
    listed = client.v1.refunds.list(params={"payment_intent": intent_id})
    assert [r.id for r in listed.data] == [rest.id, partial.id]  # newest first
    assert client.v1.refunds.retrieve(partial.id).metadata.to_dict() == {"reason": "partial"}

    failed = server.fail_refund(rest.id)
    assert failed["status"] == "failed"
    assert client.v1.charges.retrieve(charge.id).amount_refunded == 500
    assert types(server.pending)[-2:] == ["refund.updated", "charge.refund.updated"]


@pytest.mark.parametrize("won", [True, False])
def test_disputes(server: StripeServer, client: stripe.StripeClient, won: bool) -> None:
    intent_id = paid_intent(server, client, 2000)
    server.pending.clear()
    dispute = server.create_dispute(intent_id)
    assert dispute["id"].startswith("dp_")
    assert (dispute["amount"], dispute["status"], dispute["reason"]) == (2000, "needs_response", "fraudulent")
    assert [(t["amount"], t["fee"]) for t in dispute["balance_transactions"]] == [(-2000, 1500)]
    assert client.v1.charges.retrieve(dispute["charge"]).disputed is True
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"payment_intent": intent_id})
    assert caught.value.code == "charge_disputed"

    closed = server.close_dispute(dispute["id"], won=won)
    fetched = client.v1.disputes.retrieve(dispute["id"])
    assert fetched.status == closed["status"] == ("won" if won else "lost")
    if won:
        assert [(t.amount, t.fee) for t in fetched.balance_transactions] == [(-2000, 1500), (2000, 0)]
        assert types(server.pending) == ["charge.dispute.created", "charge.dispute.funds_withdrawn",
                                         "charge.dispute.funds_reinstated", "charge.dispute.closed"]
    else:
        assert len(fetched.balance_transactions) == 1
        assert types(server.pending) == ["charge.dispute.created", "charge.dispute.funds_withdrawn",
                                         "charge.dispute.closed"]


def test_transfers(server: StripeServer, client: stripe.StripeClient) -> None:
    transfer = client.v1.transfers.create(params={"amount": 1200, "currency": "eur", "destination": "acct_123",
                                                  "transfer_group": "round-1", "metadata": {"round": "1"}})
    assert transfer.id.startswith("tr_") and transfer.destination == "acct_123"
    assert client.v1.transfers.retrieve(transfer.id).metadata.to_dict() == {"round": "1"}
    assert types(server.pending) == ["transfer.created"]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.transfers.create(params={"amount": 1200, "currency": "eur", "destination": "cus_123"})
    assert caught.value.param == "destination"


# --------------------------------------------------------------------------- webhooks


def test_webhook_signatures(server: StripeServer, client: stripe.StripeClient) -> None:
    received: list[tuple[bytes, dict[str, str]]] = []
    server.webhook_sink = lambda payload, headers: received.append((payload, headers)) or 200
    client.v1.customers.create(params={"email": "a@example.org"})
    paid_intent(server, client)
    assert server.deliver_pending() == [200, 200, 200]
    payload, headers = received[0]
    assert headers["Content-Type"].startswith("application/json")
    event = stripe.Webhook.construct_event(payload, headers["Stripe-Signature"], server.webhook_secret,
                                           tolerance=300)
    assert event.type == "payment_intent.succeeded" and event.api_version == stripe.api_version
    assert client.construct_event(payload, headers["Stripe-Signature"], server.webhook_secret).id == event.id
    assert event["request"]["idempotency_key"] is None  # completed by the hosted page, not an API call

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, headers["Stripe-Signature"], "whsec_other", tolerance=300)
    stale = server.sign(payload, timestamp=int(time.time()) - 600)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, stale, server.webhook_secret, tolerance=300)

    server.deliver(server.events[0], secret="whsec_other")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(received[-1][0], received[-1][1]["Stripe-Signature"], server.webhook_secret)
    server.deliver(server.events[0], signature="")
    assert "Stripe-Signature" not in received[-1][1]


def test_queue_delivers_only_when_asked_in_order(server: StripeServer, client: stripe.StripeClient) -> None:
    seen: list[str] = []
    server.webhook_sink = lambda payload, headers: seen.append(json.loads(payload)["type"]) or 204
    session = payment_session(client)
    server.complete_checkout(session.id)
    client.v1.refunds.create(params={"payment_intent": server.objects("checkout.session")[session.id]
                                     ["payment_intent"], "amount": 100},
                             options={"idempotency_key": "refund-1"})
    assert seen == []
    assert len(server.pending) == 5
    assert server.pending[3]["request"]["idempotency_key"] == "refund-1"
    assert server.deliver_pending() == [204] * 5
    assert seen == ["payment_intent.succeeded", "charge.succeeded", "checkout.session.completed", "refund.created",
                    "charge.refunded"]
    assert server.pending == [] and server.deliver_pending() == []
    assert [d["status"] for d in server.deliveries] == [204] * 5


def test_thread_delivery_posts_to_the_webhook_url(shop: tuple[str, list[str]]) -> None:
    received: list[dict[str, Any]] = []
    done = threading.Event()

    class Endpoint(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            stripe.Webhook.construct_event(body, self.headers["Stripe-Signature"], "whsec_x")
            received.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            if len(received) == 3:
                done.set()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=endpoint.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    server = StripeServer(delivery="thread", webhook_secret="whsec_x",
                          webhook_url=f"http://127.0.0.1:{endpoint.server_address[1]}/hook").start()
    try:
        client = server.client()
        server.complete_checkout(payment_session(client).id)
        assert server.pending == []
        assert done.wait(5)
        assert types(received) == ["payment_intent.succeeded", "charge.succeeded", "checkout.session.completed"]
    finally:
        server.stop()
        endpoint.shutdown()
        endpoint.server_close()


# --------------------------------------------------------------------------- hosted page and HTTP controls


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_hosted_page_completes_a_session(server: StripeServer, client: stripe.StripeClient,
                                         shop: tuple[str, list[str]]) -> None:
    base, visited = shop
    session = payment_session(client, success_url=f"{base}/thanks?session={{CHECKOUT_SESSION_ID}}",
                              cancel_url=f"{base}/cart")
    page = urllib.request.urlopen(session.url).read().decode()
    assert 'id="card-number"' in page and 'name="card"' in page and 'id="submit"' in page
    assert "€20.00" in page and f'href="{base}/cart"' in page

    form = urllib.parse.urlencode({"card": "4242 4242 4242 4242"}).encode()
    with urllib.request.urlopen(urllib.request.Request(session.url, data=form)) as response:  # follows the 303
        assert response.status == 200 and response.read() == b"back at the shop"
    assert visited == [f"/thanks?session={session.id}"]
    assert client.v1.checkout.sessions.retrieve(session.id).status == "complete"


def test_hosted_page_three_d_secure(server: StripeServer, client: stripe.StripeClient) -> None:
    session = payment_session(client)
    opener = urllib.request.build_opener(_NoRedirect)
    form = urllib.parse.urlencode({"card": CARD_AUTHENTICATE_ALWAYS}).encode()
    with pytest.raises(urllib.error.HTTPError) as caught:
        opener.open(urllib.request.Request(session.url, data=form))
    assert (caught.value.code, caught.value.headers["Location"]) == (303, f"/pay/{session.id}/3ds")
    challenge = urllib.request.urlopen(f"{server.url}/pay/{session.id}/3ds").read().decode()
    assert "3-D Secure" in challenge and 'id="authenticate-success"' in challenge
    assert 'id="authenticate-fail"' in challenge

    failed = urllib.request.urlopen(urllib.request.Request(f"{server.url}/pay/{session.id}/3ds",
                                                           data=b"result=fail")).read().decode()
    assert "unable to authenticate" in failed
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"

    declined = urllib.request.urlopen(urllib.request.Request(session.url, data=b"card=4000000000000002"))
    assert "Your card was declined." in declined.read().decode()

    with pytest.raises(urllib.error.HTTPError):
        opener.open(urllib.request.Request(session.url, data=form))
    with pytest.raises(urllib.error.HTTPError) as caught:
        opener.open(urllib.request.Request(f"{server.url}/pay/{session.id}/3ds", data=b"result=success"))
    assert caught.value.code == 303 and caught.value.headers["Location"].endswith(f"session={session.id}")
    assert client.v1.checkout.sessions.retrieve(session.id).payment_status == "paid"


def test_http_test_controls(server: StripeServer, client: stripe.StripeClient) -> None:
    statuses: list[int] = []
    server.webhook_sink = lambda payload, headers: statuses.append(200) or 200

    def post(path: str, **form: str) -> dict[str, Any]:
        data = urllib.parse.urlencode(form).encode()
        return json.load(urllib.request.urlopen(urllib.request.Request(server.url + path, data=data)))

    session = payment_session(client)
    assert post(f"/_test/checkout/{session.id}/complete", card="4242424242424242")["status"] == "complete"
    intent_id = client.v1.checkout.sessions.retrieve(session.id).payment_intent
    dispute = post("/_test/disputes", payment_intent=str(intent_id), amount="1000")
    assert dispute["amount"] == 1000
    assert post(f"/_test/disputes/{dispute['id']}/close", won="1")["status"] == "won"
    assert post(f"/_test/checkout/{payment_session(client).id}/expire")["status"] == "expired"
    events = json.load(urllib.request.urlopen(f"{server.url}/_test/events"))
    assert len(events["data"]) == len(events["pending"]) == 8
    assert post("/_test/deliver") == {"statuses": [200] * 8}
    assert server.pending == []
