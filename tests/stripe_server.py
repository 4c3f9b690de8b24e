"""A local stand-in for the part of Stripe's HTTP API the engine uses: test infrastructure only.

No Stripe sandbox is reachable from the test machines, so this module serves, on 127.0.0.1, the
endpoints the engine calls through the official ``stripe`` client (``StripeClient(key,
base_addresses={"api": server.url})``), with Stripe's object shapes, id prefixes, form-encoded
nested parameters, ``expand[]``, idempotency keys, error bodies (a 402 becomes ``stripe.CardError``)
and signed webhook events. It keeps everything in memory, behind one lock.

Served: customers, Checkout Sessions (payment and setup mode) with a hosted page at ``/pay/{id}``
(plain HTML, no JavaScript), PaymentIntents, SetupIntents, PaymentMethods, charges, balance
transactions (Stripe's fee: 1.5 % rounded half up + 25 minor units by default), refunds, disputes,
transfers and events. Test controls: the Python methods of :class:`StripeServer` and, for browser
tests, the unauthenticated ``/_test/...`` endpoints.

Cards (Stripe's own test numbers), on the hosted page (on-session) and off-session
(``payment_intents.create(confirm=True, off_session=True)`` with a saved PaymentMethod):

=================== ======================================== ===========================================
card                on-session (hosted page, ``confirm``)     off-session
=================== ======================================== ===========================================
4242424242424242    succeeds (as does any other valid number) succeeds
4000002500003155    3-D Secure page, then succeeds or fails   succeeds once set up
4000002760003184    3-D Secure page, then succeeds or fails   402 ``authentication_required``
4000000000000341    setup: attaches; payment: declined        402 ``card_declined`` / ``generic_decline``
4000000000000002    declined ("Your card was declined.")      402 ``card_declined`` / ``generic_decline``
4000000000009995    setup: attaches; payment: declined        402 ``card_declined`` / ``insufficient_funds``
=================== ======================================== ===========================================

Events are created as Stripe would send them and, with ``delivery="queue"`` (the default), wait in
:attr:`StripeServer.pending` until the test calls :meth:`StripeServer.deliver_pending`; with
``delivery="thread"`` a background thread POSTs each one about 50 ms after it happened. Run it by
hand for browser work::

    python -m tests.stripe_server --port 12111 \\
        --webhook-url http://127.0.0.1:5000/api/v1/webhooks/stripe --webhook-secret whsec_x
"""

from __future__ import annotations

import argparse
import base64
import copy
import hmac
import html
import json
import queue
import re
import secrets
import string
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from hashlib import sha256
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import stripe
import stripe.params
import stripe.params.checkout

HOST = "127.0.0.1"

CARD_SUCCESS = "4242424242424242"
CARD_AUTHENTICATE_ON_SESSION = "4000002500003155"
CARD_AUTHENTICATE_ALWAYS = "4000002760003184"
CARD_ATTACH_THEN_DECLINE = "4000000000000341"
CARD_DECLINED = "4000000000000002"
CARD_INSUFFICIENT_FUNDS = "4000000000009995"

_ALPHABET = string.ascii_letters + string.digits
_ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf",
                 "xof", "xpf"}
# Stripe's minimum charge amounts (minor units) for the currencies the engine may use.
_MINIMUM_AMOUNT = {"eur": 50, "usd": 50, "gbp": 30, "chf": 50, "cad": 50, "aud": 50, "dkk": 250, "sek": 300,
                   "nok": 300, "pln": 200, "czk": 1500, "jpy": 50}
_SYMBOL = {"eur": "€", "usd": "$", "gbp": "£"}
_DISPUTE_OPEN = {"needs_response", "under_review", "warning_needs_response", "warning_under_review"}

_DECLINES = {
    "generic_decline": ("card_declined", "Your card was declined."),
    "insufficient_funds": ("card_declined", "Your card has insufficient funds."),
    "authentication_required": (
        "authentication_required", "Your card was declined. This transaction requires authentication."),
}
_AUTH_FAILED_MESSAGE = ("The provided PaymentMethod has failed authentication. You can provide payment_method_data or "
                        "a new PaymentMethod to attempt to fulfill this PaymentIntent again.")
_AUTH_FAILED_PAGE = ("We are unable to authenticate your payment method. Please choose a different payment method "
                     "and try again.")

Sink = Callable[[bytes, dict[str, str]], int]


def _random_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _now() -> int:
    return int(time.time())


def _money(amount: int, currency: str) -> str:
    """``€20.00``, ``$5.00``, ``1000 JPY``: for messages and the hosted page."""
    if currency in _ZERO_DECIMAL:
        text = str(amount)
    else:
        text = f"{amount // 100}.{amount % 100:02d}" if amount >= 0 else f"-{-amount // 100}.{-amount % 100:02d}"
    symbol = _SYMBOL.get(currency)
    return f"{symbol}{text}" if symbol else f"{text} {currency.upper()}"


def _luhn(number: str) -> bool:
    total = 0
    for position, digit in enumerate(reversed(number)):
        value = int(digit) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _brand(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if re.match(r"5[1-5]|2[2-7]", number):
        return "mastercard"
    if re.match(r"3[47]", number):
        return "amex"
    return "unknown"


# --------------------------------------------------------------------------- errors


class StripeServerError(Exception):
    """An API error: its HTTP status and Stripe's error body ``{"error": {...}}``.

    The Python test controls raise it too (unknown ids, impossible transitions)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, store: bool = False, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.store = store  # whether an idempotency key keeps this answer (the endpoint had started executing)
        error: dict[str, Any] = {"type": type, "message": message}
        if code:
            error["code"] = code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if param:
            error["param"] = param
        error.update(extra)
        self.body = {"error": error}


def _missing(param: str) -> StripeServerError:
    return StripeServerError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def _no_such(kind: str, value: str, param: str | None = None) -> StripeServerError:
    """``resource_missing``: 404 for the object in the URL, 400 for one named in the parameters."""
    return StripeServerError(400 if param else 404, f"No such {kind}: '{value}'", code="resource_missing", param=param)


# --------------------------------------------------------------------------- parameters


def decode_params(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (``a[b][0][c]=v``) back into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", key)
        if not match:
            raise StripeServerError(400, f"Invalid parameter name: {key}", param=key)
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for index, part in enumerate(parts):
            if part == "":  # ``expand[]=x``: the next index
                part = str(sum(1 for k in node if k.isdigit()))
            if index == len(parts) - 1:
                if isinstance(node.get(part), dict):
                    raise StripeServerError(400, f"Invalid value for {key}: expected an object", param=key)
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    if child == "":  # ``metadata=`` then ``metadata[k]=v``
                        child = node[part] = {}
                    else:
                        raise StripeServerError(400, f"Invalid object for {key}", param=key)
                node = child
    return _listify(root)


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    converted = {k: _listify(v) for k, v in value.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def _check_unknown(value: Any, spec: Any, prefix: str = "") -> None:
    """``parameter_unknown`` for any key the official client's typed parameters don't know, at any depth.

    The ``stripe.params`` TypedDicts mirror Stripe's OpenAPI spec; free-form dicts (metadata) are not checked."""
    if spec is None or not isinstance(value, dict):
        return
    allowed = getattr(spec, "__annotations__", {})
    module = sys.modules.get(spec.__module__)
    for key, sub in value.items():
        name = f"{prefix}[{key}]" if prefix else key
        if key not in allowed:
            raise StripeServerError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)
        annotation = repr(allowed[key])
        if "Dict[" in annotation:
            continue
        child = None
        for candidate in re.findall(r"[A-Z]\w*Params\w*", annotation):
            found = getattr(module, candidate, None)
            if isinstance(found, type) and hasattr(found, "__optional_keys__"):
                child = found
                break
        if child is None:
            continue
        if isinstance(sub, list):
            for index, item in enumerate(sub):
                _check_unknown(item, child, f"{name}[{index}]")
        else:
            _check_unknown(sub, child, name)


def _str(params: dict[str, Any], name: str, *, required: bool = False, path: str | None = None) -> str | None:
    value = params.get(name)
    path = path or name
    if value is None or value == "":
        if required:
            raise _missing(path)
        return None
    if not isinstance(value, str):
        raise StripeServerError(400, f"Invalid string: {path} must be a string", code="parameter_invalid_string",
                                param=path)
    return value


def _int(params: dict[str, Any], name: str, *, required: bool = False, minimum: int | None = None,
         path: str | None = None) -> int | None:
    path = path or name
    raw = _str(params, name, required=required, path=path)
    if raw is None:
        return None
    if not re.fullmatch(r"-?\d+", raw):
        raise StripeServerError(400, f"Invalid integer: {raw}", code="parameter_invalid_integer", param=path)
    value = int(raw)
    if minimum is not None and value < minimum:
        raise StripeServerError(400, f"This value must be greater than or equal to {minimum}.",
                                code="parameter_invalid_integer", param=path)
    return value


def _bool(params: dict[str, Any], name: str) -> bool:
    raw = _str(params, name)
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise StripeServerError(400, f"Invalid boolean: {raw}", param=name)
    return raw == "true"


def _enum(params: dict[str, Any], name: str, choices: tuple[str, ...], *, required: bool = False,
          path: str | None = None) -> str | None:
    path = path or name
    value = _str(params, name, required=required, path=path)
    if value is not None and value not in choices:
        raise StripeServerError(400, f"Invalid {path}: must be one of {', '.join(choices)}",
                                code="parameter_invalid_string", param=path)
    return value


def _currency(params: dict[str, Any], name: str, *, required: bool = False, path: str | None = None) -> str | None:
    path = path or name
    value = _str(params, name, required=required, path=path)
    if value is None:
        return None
    if not re.fullmatch(r"[A-Za-z]{3}", value):
        raise StripeServerError(400, f"Invalid currency: {value.lower()}. Stripe currently supports these "
                                "currencies: eur, usd, gbp, ...", param=path)
    return value.lower()


def _metadata(params: dict[str, Any], name: str = "metadata") -> dict[str, str]:
    """Stripe's metadata rules: strings only, 50 keys of up to 40 characters, values up to 500 characters."""
    value = params.get(name)
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise StripeServerError(400, "Invalid object", param=name)
    result = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise StripeServerError(400, "Invalid value type: {} must be a string", param=f"{name}[{key}]")
        if len(key) > 40:
            raise StripeServerError(400, f"Metadata keys can have up to 40 characters, but you passed in a key that "
                                    f"is {len(key)} characters.", param=f"{name}[{key}]")
        if len(item) > 500:
            raise StripeServerError(400, f"Metadata values can have up to 500 characters, but you passed in a value "
                                    f"that is {len(item)} characters.", param=f"{name}[{key}]")
        if item != "":
            result[key] = item
    if len(result) > 50:
        raise StripeServerError(400, "You can have up to 50 metadata keys.", param=name)
    return result


def _url(params: dict[str, Any], name: str) -> str | None:
    value = _str(params, name)
    if value is not None:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise StripeServerError(400, "Not a valid URL", code="url_invalid", param=name)
    return value


def _object(params: dict[str, Any], name: str) -> dict[str, Any]:
    value = params.get(name)
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise StripeServerError(400, "Invalid object", param=name)
    return value


def _expand_paths(params: dict[str, Any]) -> list[str]:
    value = params.get("expand")
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise StripeServerError(400, "Invalid array", param="expand")
    return value


def _check_minimum(amount: int, currency: str, param: str, what: str = "Amount") -> None:
    minimum = _MINIMUM_AMOUNT.get(currency)
    if minimum is not None and amount < minimum:
        raise StripeServerError(400, f"{what} must be at least {_money(minimum, currency)} {currency}",
                                code="amount_too_small", param=param)


# --------------------------------------------------------------------------- the server


_P = stripe.params
_C = stripe.params.checkout


class StripeServer:
    """Stripe's API on 127.0.0.1 for the tests; see the module docstring.

    ``delivery="queue"``: events wait in :attr:`pending` until :meth:`deliver_pending` (from the test's thread).
    ``delivery="thread"``: a background thread delivers each event to :attr:`webhook_url` (or
    :attr:`webhook_sink`) about ``delivery_delay`` seconds after it happened.
    """

    def __init__(self, *, api_key: str = "sk_test_local", webhook_secret: str = "whsec_test_local",
                 delivery: str = "queue", webhook_url: str | None = None, fee_bps: int = 150, fee_fixed: int = 25,
                 dispute_fee: int = 1500, port: int = 0, delivery_delay: float = 0.05, verbose: bool = False) -> None:
        if delivery not in ("queue", "thread"):
            raise ValueError("delivery is 'queue' or 'thread'")
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.delivery = delivery
        self.webhook_url = webhook_url
        self.webhook_sink: Sink | None = None
        self.fee_bps = fee_bps
        self.fee_fixed = fee_fixed
        self.dispute_fee = dispute_fee
        self.delivery_delay = delivery_delay
        self.verbose = verbose
        self.url = ""
        self.port = port
        self.events: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []  # {"event", "type", "status"} for every delivery attempt
        self._lock = threading.RLock()
        self._objects: dict[str, dict[str, Any]] = {}
        self._kinds: dict[str, dict[str, dict[str, Any]]] = {}
        self._cards: dict[str, str] = {}  # PaymentMethod id -> card number it was made with
        self._checkout: dict[str, dict[str, Any]] = {}  # session id -> what the session object doesn't show
        self._intent_session: dict[str, str] = {}  # PaymentIntent / SetupIntent id -> checkout session id
        self._idempotency: dict[str, dict[str, Any]] = {}
        self._context = threading.local()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._outbox: queue.Queue[tuple[float, dict[str, Any]] | None] = queue.Queue()
        self._worker: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> StripeServer:
        """Bind 127.0.0.1 (a free port unless one was given) and serve in a daemon thread."""
        httpd = _HTTPServer((HOST, self.port), _Handler)
        httpd.app = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self.url = f"http://{HOST}:{self.port}"
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"stripe-server-{self.port}", daemon=True)
        self._thread.start()
        if self.delivery == "thread":
            self._worker = threading.Thread(target=self._deliver_loop, name="stripe-webhooks", daemon=True)
            self._worker.start()
        return self

    def stop(self) -> None:
        if self._worker is not None:
            self._outbox.put(None)
            self._worker.join(timeout=5)
            self._worker = None
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StripeServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, **options: Any) -> stripe.StripeClient:
        """An official client pointed at this server."""
        options.setdefault("max_network_retries", 0)
        return stripe.StripeClient(self.api_key, base_addresses={"api": self.url}, **options)

    # ------------------------------------------------------------------ storage

    def _store(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._objects[obj["id"]] = obj
        self._kinds.setdefault(obj["object"], {})[obj["id"]] = obj
        return obj

    def _get(self, kind: str, object_id: str | None, param: str | None = None) -> dict[str, Any]:
        obj = self._kinds.get(kind, {}).get(object_id or "")
        if obj is None:
            raise _no_such(kind, object_id or "", param)
        return obj

    def objects(self, kind: str) -> dict[str, dict[str, Any]]:
        """Copies of the stored objects of one kind by id: ``customer``, ``checkout.session`` (or
        ``checkout_session``), ``payment_intent``, ``setup_intent``, ``payment_method``, ``charge``,
        ``balance_transaction``, ``refund``, ``dispute``, ``transfer``, ``event``."""
        kind = "checkout.session" if kind in ("checkout_session", "session") else kind
        with self._lock:
            return copy.deepcopy(self._kinds.get(kind, {}))

    def card_number(self, payment_method_id: str) -> str:
        """The card number a PaymentMethod was made with."""
        with self._lock:
            return self._cards[payment_method_id]

    # ------------------------------------------------------------------ events and delivery

    def _emit(self, type_: str, obj: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
        request = getattr(self._context, "request", None) or {"id": None, "idempotency_key": None}
        data: dict[str, Any] = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = previous
        event = {
            "id": _random_id("evt_"), "object": "event", "api_version": stripe.api_version, "created": _now(),
            "data": data, "livemode": False, "pending_webhooks": 1, "request": dict(request), "type": type_,
        }
        self._store(event)
        self.events.append(event)
        if self.delivery == "queue":
            self.pending.append(event)
        else:
            self._outbox.put((time.monotonic() + self.delivery_delay, event))
        return event

    def sign(self, payload: bytes, timestamp: int | None = None, secret: str | None = None) -> str:
        """The ``Stripe-Signature`` header value for ``payload``: ``t=...,v1=HMAC-SHA256(secret, "t.payload")``."""
        timestamp = _now() if timestamp is None else timestamp
        key = (self.webhook_secret if secret is None else secret).encode()
        digest = hmac.new(key, f"{timestamp}.".encode() + payload, sha256).hexdigest()
        return f"t={timestamp},v1={digest}"

    def deliver(self, event: dict[str, Any] | str, *, timestamp: int | None = None, secret: str | None = None,
                signature: str | None = None) -> int:
        """Deliver one event (again, if it was already) and return the endpoint's status.

        ``timestamp``/``secret`` sign it as of another moment or with another secret; ``signature`` is sent as the
        raw header instead (``""`` sends no header at all). Goes to :attr:`webhook_sink` if set, else is POSTed to
        :attr:`webhook_url`."""
        if isinstance(event, str):
            with self._lock:
                event = self._get("event", event)
        payload = json.dumps(event, indent=2).encode()
        header = self.sign(payload, timestamp, secret) if signature is None else signature
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"}
        if header:
            headers["Stripe-Signature"] = header
        if self.webhook_sink is not None:
            status = int(self.webhook_sink(payload, headers))
        elif self.webhook_url:
            request = urllib.request.Request(self.webhook_url, data=payload, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    status = response.status
            except urllib.error.HTTPError as error:
                status = error.code
        else:
            raise RuntimeError("StripeServer has neither webhook_sink nor webhook_url to deliver events to")
        with self._lock:
            self.deliveries.append({"event": event["id"], "type": event["type"], "status": status})
        return status

    def deliver_pending(self) -> list[int]:
        """Deliver the queued events in order and return their statuses. Events that their delivery causes (the
        webhook handler calling the API) stay queued for the next call."""
        with self._lock:
            batch = list(self.pending)
            self.pending.clear()
        return [self.deliver(event) for event in batch]

    def _deliver_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            due, event = item
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                self.deliver(event)
            except Exception as error:  # a webhook endpoint that is down must not stop later deliveries
                with self._lock:
                    self.deliveries.append({"event": event["id"], "type": event["type"], "status": 0})
                print(f"stripe_server: delivering {event['type']} failed: {error}", file=sys.stderr)

    # ------------------------------------------------------------------ expansion and lists

    def _render(self, obj: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``obj`` with ``expand[]`` applied."""
        result = copy.deepcopy(obj)
        for path in _expand_paths(params):
            parts = path.split(".")
            if len(parts) > 4:
                raise StripeServerError(400, f"You cannot expand more than 4 levels of a property. Property: {path}",
                                        param="expand")
            self._expand(result, parts, path)
        return result

    def _expand(self, obj: Any, parts: list[str], path: str) -> None:
        if obj is None or not parts:
            return
        if isinstance(obj, list):
            for item in obj:
                self._expand(item, parts, path)
            return
        if obj.get("object") == "list" and parts[0] == "data":
            for item in obj["data"]:
                self._expand(item, parts[1:], path)
            return
        key = parts[0]
        if key not in obj or not isinstance(obj[key], (str, dict, list, type(None))):
            raise StripeServerError(400, f"This property cannot be expanded ({key}).", param="expand")
        value = obj[key]
        if isinstance(value, str):
            target = self._objects.get(value)
            if target is None:
                raise StripeServerError(400, f"This property cannot be expanded ({key}).", param="expand")
            value = obj[key] = copy.deepcopy(target)
        self._expand(value, parts[1:], path)

    def _list(self, url: str, items: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        """Newest first, ``limit`` (1 to 100, default 10) and ``starting_after``, like Stripe."""
        limit = _int(params, "limit", minimum=1)
        limit = 10 if limit is None else limit
        if limit > 100:
            raise StripeServerError(400, "This value must be less than or equal to 100.",
                                    code="parameter_invalid_integer", param="limit")
        items = list(reversed(items))
        after = _str(params, "starting_after")
        if after is not None:
            ids = [item["id"] for item in items]
            if after not in ids:
                raise _no_such("object", after, "starting_after")
            items = items[ids.index(after) + 1:]
        return {"object": "list", "data": items[:limit], "has_more": len(items) > limit, "url": url}

    # ------------------------------------------------------------------ object builders

    def _base(self, prefix: str, kind: str, **fields: Any) -> dict[str, Any]:
        obj = {"id": _random_id(prefix), "object": kind, "created": _now(), "livemode": False}
        obj.update(fields)
        return obj

    def _new_customer(self, email: str | None = None, name: str | None = None, metadata: dict[str, str] | None = None,
                      description: str | None = None) -> dict[str, Any]:
        customer = self._base(
            "cus_", "customer", address=None, balance=0, currency=None, default_source=None, delinquent=False,
            description=description, discount=None, email=email, invoice_prefix=secrets.token_hex(4).upper(),
            invoice_settings={"custom_fields": None, "default_payment_method": None, "footer": None,
                              "rendering_options": None},
            metadata=metadata or {}, name=name, next_invoice_sequence=1, phone=None, preferred_locales=[],
            shipping=None, tax_exempt="none", test_clock=None)
        return self._store(customer)

    def _new_payment_method(self, number: str, customer: str | None = None) -> dict[str, Any]:
        year = time.gmtime().tm_year + 3
        method = self._base(
            "pm_", "payment_method", allow_redisplay="unspecified",
            billing_details={"address": {"city": None, "country": None, "line1": None, "line2": None,
                                         "postal_code": None, "state": None},
                             "email": None, "name": None, "phone": None},
            card={"brand": _brand(number),
                  "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
                  "country": "US", "display_brand": _brand(number), "exp_month": 12, "exp_year": year,
                  "fingerprint": sha256(number.encode()).hexdigest()[:16], "funding": "credit",
                  "generated_from": None, "last4": number[-4:],
                  "networks": {"available": [_brand(number)], "preferred": None},
                  "three_d_secure_usage": {"supported": True}, "wallet": None},
            customer=customer, metadata={}, type="card")
        self._cards[method["id"]] = number
        return self._store(method)

    def _new_balance_transaction(self, amount: int, currency: str, *, fee: int, type_: str, category: str,
                                 source: str, description: str | None = None,
                                 fee_description: str = "Stripe processing fees") -> dict[str, Any]:
        created = _now()
        details = [{"amount": fee, "application": None, "currency": currency, "description": fee_description,
                    "type": "stripe_fee"}] if fee else []
        txn = self._base(
            "txn_", "balance_transaction", amount=amount, available_on=created + 2 * 86400, currency=currency,
            description=description, exchange_rate=None, fee=fee, fee_details=details, net=amount - fee,
            reporting_category=category, source=source, status="pending", type=type_)
        return self._store(txn)

    def fee(self, amount: int) -> int:
        """Stripe's processing fee on a charge of ``amount`` minor units: bps rounded half up, plus the fixed part."""
        return (amount * self.fee_bps + 5000) // 10000 + self.fee_fixed

    def _new_payment_intent(self, *, amount: int, currency: str, customer: str | None,
                            metadata: dict[str, str], description: str | None = None,
                            setup_future_usage: str | None = None, receipt_email: str | None = None,
                            transfer_group: str | None = None, statement_descriptor: str | None = None
                            ) -> dict[str, Any]:
        intent = self._base(
            "pi_", "payment_intent", amount=amount, amount_capturable=0, amount_details={"tip": {}},
            amount_received=0, application=None, application_fee_amount=None, automatic_payment_methods=None,
            canceled_at=None, cancellation_reason=None, capture_method="automatic", confirmation_method="automatic",
            currency=currency, customer=customer, description=description, last_payment_error=None,
            latest_charge=None, metadata=metadata, next_action=None, on_behalf_of=None, payment_method=None,
            payment_method_options={"card": {"request_three_d_secure": "automatic"}},
            payment_method_types=["card"], processing=None, receipt_email=receipt_email, review=None,
            setup_future_usage=setup_future_usage, shipping=None, statement_descriptor=statement_descriptor,
            statement_descriptor_suffix=None, status="requires_payment_method", transfer_data=None,
            transfer_group=transfer_group)
        intent["client_secret"] = f"{intent['id']}_secret_{_random_id('', 25)}"
        return self._store(intent)

    def _new_setup_intent(self, customer: str | None, metadata: dict[str, str]) -> dict[str, Any]:
        intent = self._base(
            "seti_", "setup_intent", application=None, automatic_payment_methods=None, cancellation_reason=None,
            customer=customer, description=None, flow_directions=None, last_setup_error=None, latest_attempt=None,
            mandate=None, metadata=metadata, next_action=None, on_behalf_of=None, payment_method=None,
            payment_method_options={"card": {"mandate_options": None, "network": None,
                                             "request_three_d_secure": "automatic"}},
            payment_method_types=["card"], single_use_mandate=None, status="requires_payment_method",
            usage="off_session")
        intent["client_secret"] = f"{intent['id']}_secret_{_random_id('', 25)}"
        return self._store(intent)

    # ------------------------------------------------------------------ payments

    def _decline(self, intent: dict[str, Any], method: dict[str, Any], reason: str) -> dict[str, Any]:
        """The PaymentIntent's attempt failed: ``requires_payment_method``, ``last_payment_error``, an event.
        Returns the error body (for a 402)."""
        code, message = _DECLINES[reason]
        error = {"code": code, "decline_code": reason, "doc_url": f"https://stripe.com/docs/error-codes/{code}",
                 "message": message, "payment_method": copy.deepcopy(method), "type": "card_error"}
        intent.update(status="requires_payment_method", last_payment_error=error, payment_method=None,
                      next_action=None)
        self._emit("payment_intent.payment_failed", intent)
        return {**{k: v for k, v in error.items() if k != "payment_method"},
                "payment_intent": copy.deepcopy(intent), "payment_method": copy.deepcopy(method)}

    def _succeed_payment(self, intent: dict[str, Any], method: dict[str, Any]) -> dict[str, Any]:
        """Charge the card: the charge, its balance transaction (with the fee), the PaymentIntent succeeded."""
        amount, currency = intent["amount"], intent["currency"]
        charge = self._base(
            "ch_", "charge", amount=amount, amount_captured=amount, amount_refunded=0, application=None,
            application_fee=None, application_fee_amount=None, balance_transaction=None,
            billing_details=copy.deepcopy(method["billing_details"]), calculated_statement_descriptor="FUNDRAISING",
            captured=True, currency=currency, customer=intent["customer"], description=intent["description"],
            disputed=False, failure_balance_transaction=None, failure_code=None, failure_message=None,
            fraud_details={}, metadata=dict(intent["metadata"]), on_behalf_of=None,
            outcome={"network_status": "approved_by_network", "reason": None, "risk_level": "normal",
                     "risk_score": 20, "seller_message": "Payment complete.", "type": "authorized"},
            paid=True, payment_intent=intent["id"], payment_method=method["id"],
            payment_method_details={"card": {**{k: method["card"][k] for k in (
                "brand", "country", "exp_month", "exp_year", "fingerprint", "funding", "last4")},
                "checks": method["card"]["checks"], "network": method["card"]["brand"]}, "type": "card"},
            receipt_email=intent["receipt_email"], receipt_number=None, receipt_url=None, refunded=False,
            review=None, shipping=None, source_transfer=None, statement_descriptor=intent["statement_descriptor"],
            status="succeeded", transfer_data=None, transfer_group=intent["transfer_group"])
        txn = self._new_balance_transaction(amount, currency, fee=self.fee(amount), type_="charge",
                                            category="charge", source=charge["id"],
                                            description=intent["description"])
        charge["balance_transaction"] = txn["id"]
        self._store(charge)
        intent.update(status="succeeded", amount_received=amount, latest_charge=charge["id"],
                      payment_method=method["id"], last_payment_error=None, next_action=None)
        self._emit("payment_intent.succeeded", intent)
        self._emit("charge.succeeded", charge)
        return charge

    def _confirm(self, intent: dict[str, Any], method: dict[str, Any], *, off_session: bool
                 ) -> tuple[str, dict[str, Any] | None]:
        """Attempt the payment with the card ``method`` was made with: ``("succeeded", None)``,
        ``("requires_action", None)`` or ``("failed", error)``."""
        number = self._cards[method["id"]]
        intent["payment_method"] = method["id"]
        if off_session:
            if number == CARD_AUTHENTICATE_ALWAYS:
                return "failed", self._decline(intent, method, "authentication_required")
        elif number in (CARD_AUTHENTICATE_ALWAYS, CARD_AUTHENTICATE_ON_SESSION):
            intent.update(status="requires_action", next_action={
                "type": "use_stripe_sdk",
                "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": f"{self.url}/3ds/{intent['id']}",
                                   "source": _random_id("src_")}})
            self._emit("payment_intent.requires_action", intent)
            return "requires_action", None
        if number in (CARD_ATTACH_THEN_DECLINE, CARD_DECLINED):
            return "failed", self._decline(intent, method, "generic_decline")
        if number == CARD_INSUFFICIENT_FUNDS:
            return "failed", self._decline(intent, method, "insufficient_funds")
        self._succeed_payment(intent, method)
        return "succeeded", None

    # ------------------------------------------------------------------ checkout

    def _complete_session(self, session: dict[str, Any], intent: dict[str, Any]) -> None:
        private = self._checkout[session["id"]]
        customer = intent["customer"]
        email = session["customer_email"]
        if customer and not email:
            email = self._objects[customer]["email"]
        session.update(status="complete", customer=customer,
                       customer_details={"address": None, "email": email, "name": None, "phone": None,
                                         "tax_exempt": "none", "tax_ids": []})
        if session["mode"] == "payment":
            session.update(payment_intent=intent["id"], payment_status="paid")
        else:
            session.update(setup_intent=intent["id"])
        private["intent"] = None
        private["error"] = None
        self._emit("checkout.session.completed", session)

    def _finish_checkout_payment(self, session: dict[str, Any], intent: dict[str, Any],
                                 method: dict[str, Any]) -> None:
        """After the charge: keep the card on the customer if asked to (``setup_future_usage``), complete."""
        if intent["setup_future_usage"] and intent["customer"]:
            method["customer"] = intent["customer"]
        self._complete_session(session, intent)

    def _submit_checkout(self, session_id: str, card: str) -> tuple[str, str | None]:
        """What the hosted page does with a card number: ``("complete" | "requires_action" | "error", message)``."""
        session = self._get("checkout.session", session_id)
        if session["status"] != "open":
            raise StripeServerError(400, f"This Checkout Session is {session['status']}, not open.")
        private = self._checkout[session_id]
        number = re.sub(r"[\s-]", "", card or "")
        if not re.fullmatch(r"\d{12,19}", number) or not _luhn(number):
            private["error"] = "Your card number is invalid."
            return "error", private["error"]
        if session["mode"] == "payment":
            return self._submit_payment(session, private, number)
        return self._submit_setup(session, private, number)

    def _submit_payment(self, session: dict[str, Any], private: dict[str, Any], number: str) -> tuple[str, str | None]:
        data = private["payment_intent_data"]
        intent = self._objects.get(private["payment_intent"] or "")
        if intent is None:
            customer = session["customer"]
            if customer is None and data.get("setup_future_usage"):
                customer = self._new_customer(email=session["customer_email"])["id"]
            intent = self._new_payment_intent(
                amount=session["amount_total"], currency=session["currency"], customer=customer,
                metadata=dict(data.get("metadata", {})), description=data.get("description"),
                setup_future_usage=data.get("setup_future_usage"), receipt_email=data.get("receipt_email"),
                transfer_group=data.get("transfer_group"), statement_descriptor=data.get("statement_descriptor"))
            private["payment_intent"] = intent["id"]
            self._intent_session[intent["id"]] = session["id"]
        method = self._new_payment_method(number)
        outcome, error = self._confirm(intent, method, off_session=False)
        if outcome == "succeeded":
            self._finish_checkout_payment(session, intent, method)
            return "complete", None
        if outcome == "requires_action":
            private["intent"] = intent["id"]
            return "requires_action", None
        private["error"] = error["message"] if error else "Your card was declined."
        return "error", private["error"]

    def _submit_setup(self, session: dict[str, Any], private: dict[str, Any], number: str) -> tuple[str, str | None]:
        intent = self._objects.get(private["setup_intent"] or "")
        if intent is None:
            intent = self._new_setup_intent(session["customer"], dict(private["setup_intent_data"].get("metadata", {})))
            private["setup_intent"] = intent["id"]
            self._intent_session[intent["id"]] = session["id"]
        method = self._new_payment_method(number)
        intent["payment_method"] = method["id"]
        if number == CARD_DECLINED:
            code, message = _DECLINES["generic_decline"]
            intent.update(status="requires_payment_method", payment_method=None, last_setup_error={
                "code": code, "decline_code": "generic_decline", "message": message, "type": "card_error",
                "payment_method": copy.deepcopy(method)})
            self._emit("setup_intent.setup_failed", intent)
            private["error"] = message
            return "error", message
        if number in (CARD_AUTHENTICATE_ALWAYS, CARD_AUTHENTICATE_ON_SESSION):
            intent.update(status="requires_action", next_action={
                "type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}})
            self._emit("setup_intent.requires_action", intent)
            private["intent"] = intent["id"]
            return "requires_action", None
        self._succeed_setup(session, intent, method)
        return "complete", None

    def _succeed_setup(self, session: dict[str, Any], intent: dict[str, Any], method: dict[str, Any]) -> None:
        customer = intent["customer"] or session["customer"]
        if customer is None:
            customer = self._new_customer(email=session["customer_email"])["id"]
        method["customer"] = customer
        intent.update(status="succeeded", customer=customer, payment_method=method["id"], last_setup_error=None,
                      next_action=None)
        self._emit("setup_intent.succeeded", intent)
        self._complete_session(session, intent)

    def complete_checkout(self, session_id: str, card: str = CARD_SUCCESS) -> dict[str, Any]:
        """Submit the hosted page with ``card``; returns the session. A declined card leaves it open (the message is
        in :meth:`checkout_error`); a card that needs 3-D Secure leaves it open until :meth:`authenticate`."""
        with self._lock:
            self._submit_checkout(session_id, card)
            return copy.deepcopy(self._get("checkout.session", session_id))

    def checkout_error(self, session_id: str) -> str | None:
        """The message the hosted page shows after a failed attempt, if any."""
        with self._lock:
            self._get("checkout.session", session_id)
            return self._checkout[session_id]["error"]

    def _expire_session(self, session_id: str) -> dict[str, Any]:
        session = self._get("checkout.session", session_id)
        if session["status"] != "open":
            raise StripeServerError(400, f"Only Checkout Sessions with a status in [\"open\"] can be expired. This "
                                    f"Checkout Session has a status of \"{session['status']}\".")
        session.update(status="expired", url=None)
        private = self._checkout[session_id]
        intent = self._objects.get(private["payment_intent"] or "")
        if intent is not None and intent["status"] != "succeeded":
            intent.update(status="canceled", canceled_at=_now(), cancellation_reason="abandoned", next_action=None)
        private["intent"] = None
        self._emit("checkout.session.expired", session)
        return session

    def expire_checkout(self, session_id: str) -> dict[str, Any]:
        """Expire an open session (as when its ``expires_at`` passes); event ``checkout.session.expired``."""
        with self._lock:
            return copy.deepcopy(self._expire_session(session_id))

    def authenticate(self, intent_id: str, succeed: bool = True) -> dict[str, Any]:
        """Finish the 3-D Secure challenge of an intent in ``requires_action``; returns the intent.

        ``intent_id`` is a PaymentIntent (``pi_``), a SetupIntent (``seti_``) or a checkout session (``cs_``,
        meaning the intent its hosted page is waiting on)."""
        with self._lock:
            if intent_id.startswith("cs_"):
                self._get("checkout.session", intent_id)
                waiting = self._checkout[intent_id]["intent"]
                if waiting is None:
                    raise StripeServerError(400, f"Checkout Session {intent_id} is not waiting for authentication.")
                intent_id = waiting
            intent = self._objects.get(intent_id)
            if intent is None or intent["object"] not in ("payment_intent", "setup_intent"):
                raise _no_such("intent", intent_id)
            if intent["status"] != "requires_action":
                raise StripeServerError(400, f"{intent_id} is {intent['status']}, not requires_action.",
                                        code="payment_intent_unexpected_state")
            method = self._objects[intent["payment_method"]]
            session = self._kinds.get("checkout.session", {}).get(self._intent_session.get(intent_id, ""))
            if session is not None and session["status"] != "open":
                session = None
            if intent["object"] == "payment_intent":
                if succeed:
                    self._succeed_payment(intent, method)
                    if session is not None:
                        self._finish_checkout_payment(session, intent, method)
                else:
                    intent.update(status="requires_payment_method", payment_method=None, next_action=None,
                                  last_payment_error={
                                      "code": "payment_intent_authentication_failure",
                                      "doc_url": "https://stripe.com/docs/error-codes/"
                                                 "payment-intent-authentication-failure",
                                      "message": _AUTH_FAILED_MESSAGE, "payment_method": copy.deepcopy(method),
                                      "type": "invalid_request_error"})
                    self._emit("payment_intent.payment_failed", intent)
            elif succeed:
                if session is not None:
                    self._succeed_setup(session, intent, method)
                else:
                    intent.update(status="succeeded", next_action=None)
                    self._emit("setup_intent.succeeded", intent)
            else:
                intent.update(status="requires_payment_method", payment_method=None, next_action=None,
                              last_setup_error={"code": "setup_intent_authentication_failure",
                                                "message": _AUTH_FAILED_MESSAGE, "type": "invalid_request_error",
                                                "payment_method": copy.deepcopy(method)})
                self._emit("setup_intent.setup_failed", intent)
            if session is not None and not succeed:
                self._checkout[session["id"]].update(intent=None, error=_AUTH_FAILED_PAGE)
            return copy.deepcopy(intent)

    # ------------------------------------------------------------------ refunds

    def _charge_for(self, params: dict[str, Any]) -> dict[str, Any]:
        pi_id, charge_id = _str(params, "payment_intent"), _str(params, "charge")
        if pi_id is None and charge_id is None:
            raise StripeServerError(400, "One of the following params should be provided for this request: "
                                    "payment_intent or charge.", code="parameter_missing")
        if charge_id is not None:
            charge = self._get("charge", charge_id, "charge")
            if pi_id is not None and charge["payment_intent"] != pi_id:
                raise StripeServerError(400, f"Charge {charge_id} does not belong to PaymentIntent {pi_id}.",
                                        param="charge")
            return charge
        intent = self._get("payment_intent", pi_id, "payment_intent")
        if intent["status"] != "succeeded" or not intent["latest_charge"]:
            raise StripeServerError(400, f"This PaymentIntent ({pi_id}) does not have a successful charge to refund.",
                                    code="charge_not_refundable", param="payment_intent")
        return self._objects[intent["latest_charge"]]

    def _create_refund(self, params: dict[str, Any]) -> dict[str, Any]:
        charge = self._charge_for(params)
        amount = _int(params, "amount", minimum=1)
        reason = _enum(params, "reason", ("duplicate", "fraudulent", "requested_by_customer"))
        metadata = _metadata(params)
        disputes = [d for d in self._kinds.get("dispute", {}).values() if d["charge"] == charge["id"]]
        if any(d["status"] in _DISPUTE_OPEN | {"lost"} for d in disputes):
            raise StripeServerError(400, f"Charge {charge['id']} has been charged back; cannot issue a refund.",
                                    code="charge_disputed", store=True)
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining <= 0:
            raise StripeServerError(400, f"Charge {charge['id']} has already been refunded.",
                                    code="charge_already_refunded", store=True)
        amount = remaining if amount is None else amount
        if amount > remaining:
            currency = charge["currency"]
            raise StripeServerError(400, f"Refund amount ({_money(amount, currency)}) is greater than unrefunded "
                                    f"amount on charge ({_money(remaining, currency)})", code="amount_too_large",
                                    param="amount", store=True)
        refund = self._base(
            "re_", "refund", amount=amount, balance_transaction=None, charge=charge["id"],
            currency=charge["currency"],
            destination_details={"card": {"reference_status": "pending", "reference_type": "acquirer_reference_number",
                                          "type": "refund"}, "type": "card"},
            failure_balance_transaction=None, failure_reason=None, metadata=metadata,
            payment_intent=charge["payment_intent"], reason=reason, receipt_number=None,
            source_transfer_reversal=None, status="succeeded", transfer_reversal=None)
        txn = self._new_balance_transaction(-amount, charge["currency"], fee=0, type_="refund", category="refund",
                                            source=refund["id"], description="REFUND FOR CHARGE")
        refund["balance_transaction"] = txn["id"]
        self._store(refund)
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        self._emit("refund.created", refund)
        self._emit("charge.refunded", charge)
        return refund

    def fail_refund(self, refund_id: str) -> dict[str, Any]:
        """A refund that fails after the fact (the card was closed): the amount goes back on the charge and the
        balance; events ``refund.updated`` and ``charge.refund.updated``."""
        with self._lock:
            refund = self._get("refund", refund_id)
            if refund["status"] not in ("succeeded", "pending"):
                raise StripeServerError(400, f"Refund {refund_id} is {refund['status']}; only a succeeded or pending "
                                        "refund can fail.")
            previous = {"status": refund["status"], "failure_reason": None, "failure_balance_transaction": None}
            txn = self._new_balance_transaction(refund["amount"], refund["currency"], fee=0, type_="refund_failure",
                                                category="refund_failure", source=refund["id"],
                                                description="REFUND FAILURE")
            refund.update(status="failed", failure_reason="expired_or_canceled_card",
                          failure_balance_transaction=txn["id"])
            charge = self._objects[refund["charge"]]
            charge["amount_refunded"] -= refund["amount"]
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            self._emit("refund.updated", refund, previous)
            self._emit("charge.refund.updated", refund, previous)
            return copy.deepcopy(refund)

    # ------------------------------------------------------------------ disputes

    def _create_dispute(self, payment_intent_id: str, amount: int | None) -> dict[str, Any]:
        intent = self._get("payment_intent", payment_intent_id, "payment_intent")
        if intent["status"] != "succeeded":
            raise StripeServerError(400, f"PaymentIntent {payment_intent_id} has no successful charge to dispute.",
                                    param="payment_intent")
        charge = self._objects[intent["latest_charge"]]
        if any(d["charge"] == charge["id"] for d in self._kinds.get("dispute", {}).values()):
            raise StripeServerError(400, f"Charge {charge['id']} has already been disputed.", param="payment_intent")
        disputable = charge["amount"] - charge["amount_refunded"]
        amount = disputable if amount is None else amount
        if not 0 < amount <= disputable:
            raise StripeServerError(400, f"A dispute on {charge['id']} is between 1 and {disputable}.",
                                    param="amount")
        dispute = self._base(
            "dp_", "dispute", amount=amount, balance_transactions=[], charge=charge["id"],
            currency=charge["currency"], enhanced_eligibility_types=[], evidence={},
            evidence_details={"due_by": _now() + 7 * 86400, "has_evidence": False, "past_due": False,
                              "submission_count": 0},
            is_charge_refundable=False, metadata={}, payment_intent=intent["id"],
            payment_method_details={"card": {"brand": "visa", "case_type": "chargeback", "network_reason_code": "10.4"},
                                    "type": "card"},
            reason="fraudulent", status="needs_response")
        txn = self._new_balance_transaction(-amount, charge["currency"], fee=self.dispute_fee, type_="adjustment",
                                            category="dispute", source=dispute["id"],
                                            description=f"Chargeback withdrawal for {charge['id']}",
                                            fee_description="Dispute fee")
        dispute["balance_transactions"].append(copy.deepcopy(txn))
        self._store(dispute)
        charge["disputed"] = True
        self._emit("charge.dispute.created", dispute)
        self._emit("charge.dispute.funds_withdrawn", dispute)
        return dispute

    def create_dispute(self, payment_intent_id: str, amount: int | None = None) -> dict[str, Any]:
        """The cardholder disputes the payment (reason ``fraudulent``): the amount and the dispute fee are withdrawn.
        Events ``charge.dispute.created``, ``charge.dispute.funds_withdrawn``."""
        with self._lock:
            return copy.deepcopy(self._create_dispute(payment_intent_id, amount))

    def _close_dispute(self, dispute_id: str, won: bool) -> dict[str, Any]:
        dispute = self._get("dispute", dispute_id)
        if dispute["status"] not in _DISPUTE_OPEN:
            raise StripeServerError(400, f"Dispute {dispute_id} is already closed ({dispute['status']}).")
        if won:
            txn = self._new_balance_transaction(dispute["amount"], dispute["currency"], fee=0, type_="adjustment",
                                                category="dispute_reversal", source=dispute["id"],
                                                description=f"Chargeback reversal for {dispute['charge']}")
            dispute["balance_transactions"].append(copy.deepcopy(txn))
            dispute["status"] = "won"
            self._emit("charge.dispute.funds_reinstated", dispute)
        else:
            dispute["status"] = "lost"
        self._emit("charge.dispute.closed", dispute)
        return dispute

    def close_dispute(self, dispute_id: str, won: bool) -> dict[str, Any]:
        """Close a dispute: ``won`` reinstates the amount (not the fee); events ``charge.dispute.funds_reinstated``
        (if won) and ``charge.dispute.closed``."""
        with self._lock:
            return copy.deepcopy(self._close_dispute(dispute_id, won))

    # ------------------------------------------------------------------ API endpoints

    def _api_create_customer(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._new_customer(email=_str(p, "email"), name=_str(p, "name"), metadata=_metadata(p),
                                  description=_str(p, "description"))

    def _api_update_customer(self, p: dict[str, Any], id: str) -> dict[str, Any]:
        customer = self._get("customer", id)
        for field in ("email", "name", "description"):
            if field in p:
                customer[field] = _str(p, field)
        if "metadata" in p:
            _metadata(p)  # validates
            updates = p["metadata"] if isinstance(p["metadata"], dict) else {}
            merged = {**customer["metadata"], **updates} if updates else {}
            customer["metadata"] = {k: v for k, v in merged.items() if v != ""}
        return customer

    def _api_create_session(self, p: dict[str, Any]) -> dict[str, Any]:
        mode = _enum(p, "mode", ("payment", "setup", "subscription"), required=True)
        if mode == "subscription":
            raise StripeServerError(400, "This local Stripe server does not support mode=subscription.", param="mode")
        customer = _str(p, "customer")
        email = _str(p, "customer_email")
        if customer is not None and email is not None:
            raise StripeServerError(400, "You may only specify one of these parameters: customer, customer_email.",
                                    param="customer_email")
        if customer is not None:
            self._get("customer", customer, "customer")
        currency = _currency(p, "currency")
        payment_data = _object(p, "payment_intent_data")
        setup_data = _object(p, "setup_intent_data")
        items: list[dict[str, Any]] = []
        amount_total: int | None = None
        if mode == "payment":
            if setup_data:
                raise StripeServerError(400, "You can only pass setup_intent_data in setup mode.",
                                        param="setup_intent_data")
            raw_items = p.get("line_items")
            if not raw_items:
                raise StripeServerError(400, "line_items is required in payment mode.", code="parameter_missing",
                                        param="line_items")
            if not isinstance(raw_items, list):
                raise StripeServerError(400, "Invalid array", param="line_items")
            for index, raw in enumerate(raw_items):
                items.append(self._line_item(raw, f"line_items[{index}]"))
            currencies = {item["currency"] for item in items}
            if len(currencies) > 1 or (currency is not None and currencies != {currency}):
                raise StripeServerError(400, "All line items must share the currency of the Checkout Session.",
                                        param="line_items")
            currency = items[0]["currency"]
            amount_total = sum(item["amount_total"] for item in items)
            _check_minimum(amount_total, currency, "line_items",
                           "The Checkout Session's total amount due must add up to at least")
            _enum(payment_data, "setup_future_usage", ("on_session", "off_session"),
                  path="payment_intent_data[setup_future_usage]")
            payment_data = {**payment_data, "metadata": _metadata(payment_data)}
        else:
            if p.get("line_items"):
                raise StripeServerError(400, "You can not pass line_items in setup mode.", param="line_items")
            if payment_data:
                raise StripeServerError(400, "You can only pass payment_intent_data in payment mode.",
                                        param="payment_intent_data")
            setup_data = {**setup_data, "metadata": _metadata(setup_data)}
        created = _now()
        expires_at = _int(p, "expires_at")
        if expires_at is None:
            expires_at = created + 86400
        elif not created + 1800 - 10 <= expires_at <= created + 86400 + 10:
            raise StripeServerError(400, "The `expires_at` timestamp must be between 30 minutes and 24 hours from "
                                    "Checkout Session creation.", param="expires_at")
        client_reference_id = _str(p, "client_reference_id")
        if client_reference_id is not None and len(client_reference_id) > 200:
            raise StripeServerError(400, "client_reference_id can be at most 200 characters.",
                                    param="client_reference_id")
        session = self._base(
            "cs_test_", "checkout.session", after_expiration=None, allow_promotion_codes=None,
            amount_subtotal=amount_total, amount_total=amount_total, billing_address_collection=None,
            cancel_url=_url(p, "cancel_url"), client_reference_id=client_reference_id, client_secret=None,
            currency=currency, custom_fields=[], customer=customer,
            customer_creation=None if customer else "if_required", customer_details=None, customer_email=email,
            expires_at=expires_at, invoice=None, locale=_str(p, "locale"), metadata=_metadata(p), mode=mode,
            payment_intent=None, payment_link=None, payment_method_collection="always",
            payment_method_types=["card"],
            payment_status="unpaid" if mode == "payment" else "no_payment_required", setup_intent=None,
            status="open", submit_type=_str(p, "submit_type"), subscription=None, success_url=_url(p, "success_url"),
            total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0} if amount_total else None,
            ui_mode="hosted", url=None)
        session["created"] = created
        session["url"] = f"{self.url}/pay/{session['id']}"
        self._store(session)
        self._checkout[session["id"]] = {"line_items": items, "payment_intent_data": payment_data,
                                         "setup_intent_data": setup_data, "payment_intent": None,
                                         "setup_intent": None, "intent": None, "error": None}
        return session

    def _line_item(self, raw: Any, path: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise StripeServerError(400, "Invalid object", param=path)
        if raw.get("price"):
            raise _no_such("price", str(raw["price"]), f"{path}[price]")
        price = _object(raw, "price_data")
        if not price:
            raise _missing(f"{path}[price_data]")
        currency = _currency(price, "currency", required=True, path=f"{path}[price_data][currency]")
        unit_amount = _int(price, "unit_amount", required=True, minimum=0, path=f"{path}[price_data][unit_amount]")
        product = _object(price, "product_data")
        name = _str(product, "name", required=True, path=f"{path}[price_data][product_data][name]")
        quantity = _int(raw, "quantity", required=True, minimum=1, path=f"{path}[quantity]")
        assert currency is not None and unit_amount is not None and quantity is not None
        total = unit_amount * quantity
        return {"id": _random_id("li_"), "object": "item", "amount_discount": 0, "amount_subtotal": total,
                "amount_tax": 0, "amount_total": total, "currency": currency, "description": name,
                "price": {"id": _random_id("price_"), "object": "price", "active": False, "currency": currency,
                          "product": _random_id("prod_"), "type": "one_time", "unit_amount": unit_amount},
                "quantity": quantity}

    def _api_get_session(self, p: dict[str, Any], id: str) -> dict[str, Any]:
        session = self._get("checkout.session", id)
        paths = _expand_paths(p)
        if "line_items" not in paths:
            return session
        items = self._checkout[id]["line_items"]
        return {**session, "line_items": {"object": "list", "data": items, "has_more": False,
                                          "url": f"/v1/checkout/sessions/{id}/line_items"}}

    def _api_expire_session(self, p: dict[str, Any], id: str) -> dict[str, Any]:
        return self._expire_session(id)

    def _api_create_payment_intent(self, p: dict[str, Any]) -> dict[str, Any]:
        amount = _int(p, "amount", required=True, minimum=1)
        currency = _currency(p, "currency", required=True)
        assert amount is not None and currency is not None
        _check_minimum(amount, currency, "amount")
        customer = _str(p, "customer")
        if customer is not None:
            self._get("customer", customer, "customer")
        method_id = _str(p, "payment_method")
        method = self._get("payment_method", method_id, "payment_method") if method_id else None
        confirm = _bool(p, "confirm")
        off_session_raw = _str(p, "off_session")
        if off_session_raw not in (None, "true", "false", "one_off", "recurring"):
            raise StripeServerError(400, f"Invalid off_session: {off_session_raw}", param="off_session")
        off_session = off_session_raw not in (None, "false")
        if off_session and not confirm:
            raise StripeServerError(400, "You can only pass in `off_session` when `confirm` is set to true.",
                                    param="off_session")
        if confirm and method is None:
            raise StripeServerError(400, "You cannot confirm this PaymentIntent because it's missing a payment "
                                    "method.", code="payment_intent_unexpected_state", param="payment_method")
        if method is not None and method["customer"] is not None and method["customer"] != customer:
            raise StripeServerError(400, f"The provided PaymentMethod {method['id']} belongs to Customer "
                                    f"{method['customer']}; pass that customer to use it.", param="payment_method")
        setup_future_usage = _enum(p, "setup_future_usage", ("on_session", "off_session"))
        intent = self._new_payment_intent(
            amount=amount, currency=currency, customer=customer, metadata=_metadata(p),
            description=_str(p, "description"), setup_future_usage=setup_future_usage,
            receipt_email=_str(p, "receipt_email"), transfer_group=_str(p, "transfer_group"),
            statement_descriptor=_str(p, "statement_descriptor"))
        if method is None:
            return intent
        intent["payment_method"] = method["id"]
        if not confirm:
            intent["status"] = "requires_confirmation"
            return intent
        outcome, error = self._confirm(intent, method, off_session=off_session)
        if outcome == "failed" and error is not None:
            raise StripeServerError(402, error["message"], store=True,
                                    **{k: v for k, v in error.items() if k != "message"})
        if outcome == "succeeded" and setup_future_usage and customer:
            method["customer"] = customer
        return intent

    def _api_create_refund(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._create_refund(p)

    def _api_list_refunds(self, p: dict[str, Any]) -> dict[str, Any]:
        refunds = list(self._kinds.get("refund", {}).values())
        pi_id, charge_id = _str(p, "payment_intent"), _str(p, "charge")
        if pi_id is not None:
            refunds = [r for r in refunds if r["payment_intent"] == pi_id]
        if charge_id is not None:
            refunds = [r for r in refunds if r["charge"] == charge_id]
        return self._list("/v1/refunds", refunds, p)

    def _api_create_transfer(self, p: dict[str, Any]) -> dict[str, Any]:
        amount = _int(p, "amount", required=True, minimum=1)
        currency = _currency(p, "currency", required=True)
        destination = _str(p, "destination", required=True)
        assert amount is not None and currency is not None and destination is not None
        if not re.fullmatch(r"acct_\w+", destination):
            raise _no_such("destination", destination, "destination")
        transfer = self._base(
            "tr_", "transfer", amount=amount, amount_reversed=0, balance_transaction=None, currency=currency,
            description=_str(p, "description"), destination=destination,
            destination_payment=_random_id("py_"), metadata=_metadata(p), reversed=False,
            source_transaction=_str(p, "source_transaction"), source_type="card",
            transfer_group=_str(p, "transfer_group"))
        transfer["reversals"] = {"object": "list", "data": [], "has_more": False, "total_count": 0,
                                 "url": f"/v1/transfers/{transfer['id']}/reversals"}
        txn = self._new_balance_transaction(-amount, currency, fee=0, type_="transfer", category="transfer",
                                            source=transfer["id"])
        transfer["balance_transaction"] = txn["id"]
        self._store(transfer)
        self._emit("transfer.created", transfer)
        return transfer

    def _api_list_events(self, p: dict[str, Any]) -> dict[str, Any]:
        events = self.events
        kind = _str(p, "type")
        if kind is not None:
            pattern = re.compile(re.escape(kind).replace(r"\*", ".*") + "$")
            events = [e for e in events if pattern.match(e["type"])]
        return self._list("/v1/events", events, p)

    def _retrieve(kind: str) -> Callable[[StripeServer, dict[str, Any], str], dict[str, Any]]:
        def handler(self: StripeServer, p: dict[str, Any], id: str) -> dict[str, Any]:
            return self._get(kind, id)

        return handler

    # (method, path pattern, handler, the client's parameter TypedDict for unknown-parameter checks)
    _ROUTES: list[tuple[str, re.Pattern[str], Callable[..., dict[str, Any]], Any]] = [
        (method, re.compile(pattern), handler, spec) for method, pattern, handler, spec in [
            ("POST", r"/v1/customers", _api_create_customer, _P.CustomerCreateParams),
            ("GET", r"/v1/customers/(?P<id>[^/]+)", _retrieve("customer"), _P.CustomerRetrieveParams),
            ("POST", r"/v1/customers/(?P<id>[^/]+)", _api_update_customer, _P.CustomerUpdateParams),
            ("POST", r"/v1/checkout/sessions", _api_create_session, _C.SessionCreateParams),
            ("GET", r"/v1/checkout/sessions/(?P<id>[^/]+)", _api_get_session, _C.SessionRetrieveParams),
            ("POST", r"/v1/checkout/sessions/(?P<id>[^/]+)/expire", _api_expire_session, _C.SessionExpireParams),
            ("POST", r"/v1/payment_intents", _api_create_payment_intent, _P.PaymentIntentCreateParams),
            ("GET", r"/v1/payment_intents/(?P<id>[^/]+)", _retrieve("payment_intent"),
             _P.PaymentIntentRetrieveParams),
            ("GET", r"/v1/setup_intents/(?P<id>[^/]+)", _retrieve("setup_intent"), _P.SetupIntentRetrieveParams),
            ("GET", r"/v1/payment_methods/(?P<id>[^/]+)", _retrieve("payment_method"),
             _P.PaymentMethodRetrieveParams),
            ("GET", r"/v1/charges/(?P<id>[^/]+)", _retrieve("charge"), _P.ChargeRetrieveParams),
            ("GET", r"/v1/balance_transactions/(?P<id>[^/]+)", _retrieve("balance_transaction"),
             _P.BalanceTransactionRetrieveParams),
            ("POST", r"/v1/refunds", _api_create_refund, _P.RefundCreateParams),
            ("GET", r"/v1/refunds", _api_list_refunds, _P.RefundListParams),
            ("GET", r"/v1/refunds/(?P<id>[^/]+)", _retrieve("refund"), _P.RefundRetrieveParams),
            ("GET", r"/v1/disputes/(?P<id>[^/]+)", _retrieve("dispute"), _P.DisputeRetrieveParams),
            ("POST", r"/v1/transfers", _api_create_transfer, _P.TransferCreateParams),
            ("GET", r"/v1/transfers/(?P<id>[^/]+)", _retrieve("transfer"), _P.TransferRetrieveParams),
            ("GET", r"/v1/events", _api_list_events, _P.EventListParams),
            ("GET", r"/v1/events/(?P<id>[^/]+)", _retrieve("event"), _P.EventRetrieveParams),
        ]
    ]
    del _retrieve

    # ------------------------------------------------------------------ HTTP dispatch

    def _handle(self, request: _Handler, method: str) -> None:
        parts = urllib.parse.urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        path = parts.path
        try:
            if path.startswith("/v1/"):
                self._handle_api(request, method, path, parts.query, body)
            elif path.startswith("/pay/"):
                self._handle_page(request, method, path, body)
            elif path.startswith("/_test/"):
                self._handle_control(request, method, path, body)
            else:
                _send(request, 404, b"Not found", "text/plain; charset=utf-8")
        except Exception:
            traceback.print_exc()
            error = StripeServerError(500, "The local Stripe server failed; see its traceback.", type="api_error")
            _send_json(request, 500, error.body, {"Stripe-Should-Retry": "false"})

    def _handle_api(self, request: _Handler, method: str, path: str, query: str, body: bytes) -> None:
        request_id = _random_id("req_", 14)
        headers = {"Request-Id": request_id, "Stripe-Version": request.headers.get("Stripe-Version")
                   or stripe.api_version}
        if not self._authorized(request.headers.get("Authorization")):
            supplied = request.headers.get("Authorization")
            message = ("You did not provide an API key. You need to provide your API key in the Authorization "
                       "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')." if not supplied
                       else "Invalid API Key provided: " + _masked(supplied.split(" ")[-1]))
            _send_json(request, 401, StripeServerError(401, message).body, headers)
            return
        try:
            raw = body.decode() if method == "POST" else query
            params = decode_params(urllib.parse.parse_qsl(raw, keep_blank_values=True))
        except (UnicodeDecodeError, StripeServerError) as error:
            failure = error if isinstance(error, StripeServerError) else StripeServerError(400, "Invalid body")
            _send_json(request, failure.status, failure.body, headers)
            return
        key = request.headers.get("Idempotency-Key") if method == "POST" else None
        with self._lock:
            if key:
                headers["Idempotency-Key"] = key
                stored = self._idempotency.get(key)
                if stored is not None:
                    if (stored["method"], stored["path"], stored["params"]) == (method, path, params):
                        headers.update({"Idempotent-Replayed": "true", "Original-Request": stored["request_id"]})
                        _send_json(request, stored["status"], stored["body"], headers)
                    else:
                        error = StripeServerError(
                            400, f"Keys for idempotent requests can only be used with the same parameters they were "
                                 f"first used with. Try using a key other than '{key}' if you meant to execute a "
                                 "different request.", type="idempotency_error")
                        _send_json(request, 400, error.body, headers)
                    return
            status, answer, store = self._call(method, path, params, request_id, key)
            if key and store:
                self._idempotency[key] = {"method": method, "path": path, "params": params, "status": status,
                                          "body": answer, "request_id": request_id}
        _send_json(request, status, answer, headers)

    def _call(self, method: str, path: str, params: dict[str, Any], request_id: str,
              key: str | None) -> tuple[int, dict[str, Any], bool]:
        """Route an API request; returns (status, body, whether an idempotency key keeps it)."""
        for route_method, pattern, handler, spec in self._ROUTES:
            match = pattern.fullmatch(path)
            if match is None or route_method != method:
                continue
            self._context.request = {"id": request_id, "idempotency_key": key}
            try:
                _check_unknown(params, spec)
                result = handler(self, params, **match.groupdict())
                return 200, self._render(result, params), True
            except StripeServerError as error:
                return error.status, error.body, error.store
            finally:
                self._context.request = None
        message = (f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help "
                   "at https://support.stripe.com/.")
        return 404, StripeServerError(404, message).body, False

    def _authorized(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return hmac.compare_digest(value.strip(), self.api_key)
        if scheme.lower() == "basic":
            try:
                user = base64.b64decode(value.strip()).decode().partition(":")[0]
            except ValueError:
                return False
            return hmac.compare_digest(user, self.api_key)
        return False

    # ------------------------------------------------------------------ the hosted page

    def _handle_page(self, request: _Handler, method: str, path: str, body: bytes) -> None:
        match = re.fullmatch(r"/pay/(?P<id>[^/]+)(?P<challenge>/3ds)?", path)
        if match is None or method not in ("GET", "POST"):
            _send(request, 404, b"Not found", "text/plain; charset=utf-8")
            return
        session_id = match.group("id")
        form = dict(urllib.parse.parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
        with self._lock:
            session = self._kinds.get("checkout.session", {}).get(session_id)
            if session is None:
                _send(request, 404, _page("Not found", "<p>No such checkout session.</p>"),
                      "text/html; charset=utf-8")
                return
            private = self._checkout[session_id]
            if match.group("challenge"):
                if private["intent"] is None:
                    _redirect(request, f"/pay/{session_id}")
                    return
                if method == "GET":
                    _send(request, 200, self._challenge_page(session), "text/html; charset=utf-8")
                    return
                self.authenticate(session_id, succeed=form.get("result") == "success")
            elif method == "POST" and session["status"] == "open":
                outcome, _ = self._submit_checkout(session_id, form.get("card", ""))
                if outcome == "requires_action":
                    _redirect(request, f"/pay/{session_id}/3ds")
                    return
            if session["status"] == "complete" and session["success_url"] and method == "POST":
                _redirect(request, session["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id))
                return
            page = self._checkout_page(session, private["error"])
            private["error"] = None
        _send(request, 200, page, "text/html; charset=utf-8")

    def _checkout_page(self, session: dict[str, Any], error: str | None) -> bytes:
        sid = html.escape(session["id"])
        lines = "".join(
            f"<li>{html.escape(item['description'])} &times; {item['quantity']}: "
            f"{html.escape(_money(item['amount_total'], item['currency']))}</li>"
            for item in self._checkout[session["id"]]["line_items"])
        if session["status"] == "complete":
            target = session["success_url"]
            link = (f'<p><a id="continue" href="{html.escape(target.replace("{CHECKOUT_SESSION_ID}", session["id"]))}">'
                    "Continue</a></p>" if target else "")
            return _page("Payment complete", f'<p id="status">This checkout session is complete.</p>{link}')
        if session["status"] == "expired":
            return _page("Session expired", '<p id="status">This checkout session has expired.</p>')
        if session["mode"] == "payment":
            amount = html.escape(_money(session["amount_total"], session["currency"]))
            summary = f'<ul id="items">{lines}</ul><p>Total: <strong id="amount">{amount}</strong></p>'
            button = "Pay"
        else:
            summary = "<p>Save a card for later payments.</p>"
            button = "Save card"
        email = session["customer_email"] or (
            self._objects[session["customer"]]["email"] if session["customer"] else None)
        who = f'<p id="email">{html.escape(email)}</p>' if email else ""
        alert = f'<p id="error" role="alert" style="color:#b00">{html.escape(error)}</p>' if error else ""
        cancel = (f'<p><a id="cancel" href="{html.escape(session["cancel_url"])}">Cancel and go back</a></p>'
                  if session["cancel_url"] else "")
        form = (f'<form method="post" action="/pay/{sid}">'
                '<label for="card-number">Card number</label> '
                '<input id="card-number" name="card" value="" inputmode="numeric" autocomplete="cc-number" '
                'placeholder="4242 4242 4242 4242"> '
                f'<button id="submit" type="submit">{button}</button></form>')
        return _page("Checkout", f"{summary}{who}{alert}{form}{cancel}")

    def _challenge_page(self, session: dict[str, Any]) -> bytes:
        action = f"/pay/{html.escape(session['id'])}/3ds"
        amount = (f"<p>Amount: <strong>{html.escape(_money(session['amount_total'], session['currency']))}</strong>"
                  "</p>" if session["mode"] == "payment" else "")
        body = (f"<p>Your bank asks you to confirm this {'payment' if session['mode'] == 'payment' else 'card'}.</p>"
                f'{amount}<form method="post" action="{action}"><input type="hidden" name="result" value="success">'
                '<button id="authenticate-success" type="submit">Complete authentication</button></form>'
                f'<form method="post" action="{action}"><input type="hidden" name="result" value="fail">'
                '<button id="authenticate-fail" type="submit">Fail authentication</button></form>')
        return _page("3-D Secure", body)

    # ------------------------------------------------------------------ test controls over HTTP

    def _handle_control(self, request: _Handler, method: str, path: str, body: bytes) -> None:
        form = dict(urllib.parse.parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
        try:
            result = self._control(method, path, form)
        except StripeServerError as error:
            _send_json(request, error.status, error.body)
            return
        _send_json(request, 200, result)

    def _control(self, method: str, path: str, form: dict[str, str]) -> dict[str, Any]:
        if method == "GET" and path == "/_test/events":
            with self._lock:
                return {"object": "list", "data": copy.deepcopy(self.events), "has_more": False,
                        "url": "/_test/events", "pending": [event["id"] for event in self.pending]}
        if method != "POST":
            raise StripeServerError(404, f"Unrecognized request URL ({method}: {path}).")
        if path == "/_test/deliver":
            return {"statuses": self.deliver_pending()}
        if path == "/_test/disputes":
            amount = _int(form, "amount", minimum=1)
            return self.create_dispute(_str(form, "payment_intent", required=True) or "", amount)
        routes: list[tuple[str, Callable[[str], dict[str, Any]]]] = [
            (r"/_test/checkout/([^/]+)/complete", lambda i: self.complete_checkout(i, form.get("card", CARD_SUCCESS))),
            (r"/_test/checkout/([^/]+)/expire", self.expire_checkout),
            (r"/_test/checkout/([^/]+)/authenticate", lambda i: self.authenticate(i, form.get("succeed", "1") == "1")),
            (r"/_test/payment_intents/([^/]+)/authenticate",
             lambda i: self.authenticate(i, form.get("succeed", "1") == "1")),
            (r"/_test/disputes/([^/]+)/close", lambda i: self.close_dispute(i, form.get("won") == "1")),
            (r"/_test/refunds/([^/]+)/fail", self.fail_refund),
        ]
        for pattern, action in routes:
            match = re.fullmatch(pattern, path)
            if match:
                return action(match.group(1))
        raise StripeServerError(404, f"Unrecognized request URL ({method}: {path}).")


def _masked(key: str) -> str:
    return key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else "*" * len(key)


def _page(title: str, body: str) -> bytes:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
            f'<body style="font-family:sans-serif;max-width:32rem;margin:2rem auto">'
            f"<h1>{html.escape(title)}</h1><p><small>Local Stripe test server</small></p>{body}</body></html>"
            ).encode()


def _send(request: _Handler, status: int, body: bytes, content_type: str,
          headers: dict[str, str] | None = None) -> None:
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(body)))
    request.send_header("Cache-Control", "no-store")
    for name, value in (headers or {}).items():
        request.send_header(name, value)
    request.end_headers()
    request.wfile.write(body)


def _send_json(request: _Handler, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    _send(request, status, json.dumps(body, indent=2).encode(), "application/json", headers)


def _redirect(request: _Handler, location: str) -> None:
    _send(request, 303, b"", "text/plain; charset=utf-8", {"Location": location})


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = 128  # 50 clients connecting at once must not overflow the listen backlog
    app: StripeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LocalStripe/1.0"
    timeout = 60  # an idle keep-alive connection gives its thread back after this
    wbufsize = -1  # headers and body leave in one write (flushed after each request) ...
    disable_nagle_algorithm = True  # ... and without waiting for the client's delayed ACK
    server: _HTTPServer

    def do_GET(self) -> None:
        self.server.app._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.app._handle(self, "POST")

    def do_DELETE(self) -> None:
        self.server.app._handle(self, "DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.app.verbose:
            super().log_message(format, *args)


try:
    import pytest
except ImportError:  # running by hand without the dev dependencies
    pass
else:

    @pytest.fixture
    def stripe_server() -> Iterator[StripeServer]:
        """A started :class:`StripeServer` (queued delivery), stopped after the test."""
        server = StripeServer().start()
        yield server
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local stand-in for Stripe's API (test infrastructure).")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--api-key", default="sk_test_local")
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--webhook-secret", default="whsec_test_local")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    server = StripeServer(api_key=args.api_key, webhook_secret=args.webhook_secret, delivery="thread",
                          webhook_url=args.webhook_url, port=args.port, verbose=args.verbose).start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
