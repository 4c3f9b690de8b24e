"""Background jobs that run only after the transaction that asked for them commits.

Why: mail, PDFs and other slow or outward work must never see uncommitted data, never run for a
rolled-back transaction, and never hold a transaction open. :func:`enqueue` therefore waits for the
commit of ``db.session``. Without ``REDIS_URL`` (development, tests) it runs inline once the
transaction commits (see :func:`after_commit`). With it, the job is written to the outbox
(``job_outbox``) in the transaction that asks for it, so it exists exactly when that transaction
committed, whatever happens to Redis or to the process after the commit; ``fundraising jobs
worker`` moves committed jobs from the outbox to the RQ queue between two jobs (:func:`relay`,
at most a second after the commit when it is idle) and runs them. Either way the job runs as a
worker would run it: in an app context of its own, with a session of its own, and with a copy of
its arguments taken when it was enqueued.

Idempotency contract: delivery is at least once. RQ retries a failed job (at most three times),
and a worker can die after the job's effect but before it is marked done, so **a job must be safe
to run twice**: pass ids and plain values, and make the effect idempotent (a ledger entry's
``idempotency_key``, a unique constraint, a file written under a fixed name). A ``job_id`` names the
effect, not one attempt: a job enqueued again with the same id while the first is queued or kept
(RQ's ``unique`` enqueue) or done within ``ONCE_TTL_S`` (the once-guard in :func:`perform`) runs
no second time. The guard narrows the window for duplicates; it does not close it, the job does.
A job from the outbox always has an id on the queue (its own, or ``outbox-`` and a random one), so
a relay that pushed it and then failed before deleting its row pushes it again in vain while RQ
keeps it (queued, then ``result_ttl`` after it ran); ids given to :func:`enqueue` also keep the
once-guard, random ones do not (they name no effect, and would fill Redis with a key per mail).
A job enqueued outside any transaction (a command, a job) is pushed at once.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import logging
import pickle
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
import redis
import rq
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from rq.exceptions import DuplicateJobError
from sqlalchemy import delete, event, select
from sqlalchemy.orm import Session, SessionTransaction

from fundraising.config import ConfigError
from fundraising.extensions import db
from fundraising.models import OutboxJob
from ledger.driver import Statement, insert_values
from ledger.posting import utcnow
from ledger.unit_of_work import run_in_transaction

__all__ = [
    "JobError",
    "JobInProgress",
    "NotImportable",
    "after_commit",
    "enqueue",
    "init_app",
    "jobs_group",
    "make_worker",
    "perform",
    "relay",
    "remind_borrowers_job",
    "remind_job",
    "worker_command",
]

logger = logging.getLogger(__name__)

EXTENSION = "fundraising.jobs"
DEFAULT_QUEUE = "default"
DEFAULT_TIMEOUT_S = 300
RETRY = rq.Retry(max=3, interval=[10, 60, 300])
#: How long a finished job id is remembered by the once-guard.
ONCE_TTL_S = 7 * 24 * 3600
ONCE_PREFIX = "fundraising:jobs:once:"
#: Inline mode remembers this many finished job ids (per app, in memory).
MEMORY_GUARD_SIZE = 10_000
#: The queue id of an outbox job that was given none (ids given to :func:`enqueue` may not start so).
OUTBOX_PREFIX = "outbox-"
#: How many outbox rows one relay moves to the queue at most (one transaction).
RELAY_BATCH = 500
#: How long an idle worker waits on its queue before it looks at the outbox again (seconds).
RELAY_POLL_S = 1
#: What RQ accepts as a job id, with a bound on its length.
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")
_COMMITTED = "fundraising.after_commit.committed"
_PENDING = "fundraising.jobs.after_commit"


class JobError(Exception):
    """Base class for the errors of the job machinery (not of the jobs themselves)."""


class NotImportable(JobError):
    """Raised by :func:`enqueue` when a worker could not find the function by its import path
    (a lambda, a nested function, a method, something defined in ``__main__``)."""


class JobInProgress(JobError):
    """Raised in a job when another run of the same ``job_id`` holds the once-guard; RQ retries
    the job later, when the other run has finished."""


# --------------------------------------------------------------------------- set-up


@dataclass
class _State:
    """What :func:`init_app` keeps in ``app.extensions``."""

    queue: rq.Queue | None
    timeout_s: int
    memory_guard: _MemoryGuard = field(default_factory=lambda: _MemoryGuard(MEMORY_GUARD_SIZE))


def init_app(app: Flask) -> None:
    """Bind jobs to ``app``: an RQ queue when ``REDIS_URL`` is set, inline execution otherwise.

    Safe to call more than once (the last call wins).
    """
    app.config.setdefault("JOBS_QUEUE", DEFAULT_QUEUE)
    app.config.setdefault("JOBS_TIMEOUT_S", DEFAULT_TIMEOUT_S)
    app.extensions[EXTENSION] = _State(queue=_make_queue(app.config), timeout_s=int(app.config["JOBS_TIMEOUT_S"]))
    _install_session_hooks()


def _make_queue(config: dict[str, Any]) -> rq.Queue | None:
    url = config.get("REDIS_URL")
    if not url:
        return None
    try:
        connection = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
    except ValueError:
        raise ConfigError(f"REDIS_URL must be redis://HOST:PORT/DB, got {url!r}") from None
    return rq.Queue(config["JOBS_QUEUE"], connection=connection)


def _state(app: Flask) -> _State:
    try:
        return app.extensions[EXTENSION]
    except KeyError:
        raise JobError("fundraising.jobs.init_app(app) was not called") from None


# --------------------------------------------------------------------------- after commit


@dataclass(frozen=True)
class _Pending:
    transaction: SessionTransaction
    callback: Callable[[], None]


def after_commit(callback: Callable[[], None]) -> None:
    """Call ``callback()`` once the current transaction of ``db.session`` commits.

    It is dropped if that transaction (or the savepoint it was registered in) rolls back, or if the
    session closes without committing. With no transaction open it is called at once, and its
    errors propagate; after a commit they are logged, because the commit has already happened.
    """
    _install_session_hooks()
    session = db.session()
    if not session.in_transaction():
        callback()
        return
    transaction = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_PENDING, []).append(_Pending(transaction, callback))


def _install_session_hooks() -> None:
    hooks = {"after_commit": _on_commit, "after_soft_rollback": _on_rollback,
             "after_transaction_end": _on_transaction_end}
    for name, hook in hooks.items():
        if not event.contains(db.session, name, hook):
            event.listen(db.session, name, hook)


def _on_commit(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a savepoint was released; the real commit is still to come
    # Run once the transaction has ended and its connection is back in the pool (see below): a
    # callback that needs the database must not hold a second connection while the first waits.
    session.info.setdefault(_COMMITTED, []).extend(session.info.pop(_PENDING, []))


def _on_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    pending = session.info.get(_PENDING)
    if pending:
        session.info[_PENDING] = [p for p in pending if not _inside(p.transaction, previous_transaction)]


def _on_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return
    session.info.pop(_PENDING, None)  # closed without a commit: nothing may run
    for pending in session.info.pop(_COMMITTED, []):
        try:
            pending.callback()
        except Exception:
            logger.exception("after-commit callback %r failed", pending.callback)


def _inside(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False


# --------------------------------------------------------------------------- enqueue


@dataclass(frozen=True, repr=False)
class _Call:
    """One job: the function's import path, a copy of its arguments, and its id if any."""

    path: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    job_id: str | None

    def describe(self) -> str:
        return f"{self.path} [{self.job_id}]" if self.job_id else self.path

    __repr__ = describe  # logs name the job, never its arguments (addresses, message bodies)


def enqueue(func: Callable[..., Any] | str, *args: Any, job_id: str | None = None, **kwargs: Any) -> None:
    """Run ``func(*args, **kwargs)`` as a job once the current transaction commits.

    ``func`` is a module-level function (or its dotted import path). The arguments are copied now,
    by pickling, as a worker would receive them: pass ids and plain values, not ORM objects.
    ``job_id`` (letters, digits, ``-`` and ``_``) names the effect: the same id runs once.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    state = _state(app)
    if job_id is not None and (not JOB_ID.fullmatch(job_id) or job_id.startswith(OUTBOX_PREFIX)):
        raise ValueError(f"job_id must be 1-200 letters, digits, '-' or '_', not starting with "
                         f"{OUTBOX_PREFIX!r}, got {job_id!r}")
    payload = pickle.dumps((args, kwargs))
    path = import_path(func)
    session = db.session()
    if state.queue is not None and session.in_transaction():
        _INSERT_OUTBOX.execute(session, {"path": path, "payload": payload,
                                         "job_id": job_id or f"{OUTBOX_PREFIX}{uuid.uuid4().hex}",
                                         "created_at": utcnow()})
        return
    snapshot = pickle.loads(payload)
    call = _Call(path, snapshot[0], snapshot[1], job_id)
    if state.queue is None:
        after_commit(functools.partial(_run_inline, app, call))
    else:
        _push(state.queue, call, state.timeout_s)


_OUTBOX = OutboxJob.__table__
_INSERT_OUTBOX = Statement(insert_values(_OUTBOX, ("path", "payload", "job_id", "created_at")))
#: The oldest committed jobs; a concurrent relay skips the rows another one holds (PostgreSQL).
_NEXT_IN_OUTBOX = (select(_OUTBOX.c.id, _OUTBOX.c.path, _OUTBOX.c.payload, _OUTBOX.c.job_id)
                   .order_by(_OUTBOX.c.id).limit(RELAY_BATCH).with_for_update(skip_locked=True))


def relay(app: Flask) -> int:
    """Move committed jobs from the outbox to the app's queue, oldest first, and return how many
    (at most :data:`RELAY_BATCH`). The rows are deleted in the transaction that read them, after
    their jobs were pushed: if pushing fails (Redis down), the error propagates and the rows stay
    for the next relay; if the process stops after a push and before the commit, the next relay
    pushes the same job ids again, and they do not run twice (RQ's unique enqueue, the guard)."""
    state = _state(app)
    if state.queue is None:
        return 0

    def move(session: Session) -> int:
        rows = session.execute(_NEXT_IN_OUTBOX).all()
        for _id, path, payload, job_id in rows:
            args, kwargs = pickle.loads(payload)
            own = None if job_id.startswith(OUTBOX_PREFIX) else job_id  # the once-guard is for named effects
            _push(state.queue, _Call(path, args, kwargs, own), state.timeout_s, queue_id=job_id)
        if rows:
            session.execute(delete(_OUTBOX).where(_OUTBOX.c.id.in_([row[0] for row in rows])))
        return len(rows)

    with app.app_context():
        return run_in_transaction(db.session, move)


def import_path(func: Callable[..., Any] | str) -> str:
    """The dotted path a worker imports ``func`` by; raises :class:`NotImportable`."""
    path = func if isinstance(func, str) else f"{func.__module__}.{func.__qualname__}"
    if "<" in path or path.startswith("__main__."):
        raise NotImportable(f"jobs must be module-level functions, got {path!r}")
    found = resolve(path)
    if not isinstance(func, str) and found is not func:
        raise NotImportable(f"{path!r} does not import back as the function given")
    return path


def resolve(path: str) -> Callable[..., Any]:
    """Import ``package.module.function``; raises :class:`NotImportable`."""
    module_name, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        raise NotImportable(f"cannot import {path!r}") from None
    if not callable(found):
        raise NotImportable(f"{path!r} is not callable")
    return found


def _run_inline(app: Flask, call: _Call) -> None:
    """Run ``call`` now, as a worker would: no request, a fresh app context; errors are logged."""
    try:
        contextvars.Context().run(_perform_in_app, app, call)
    except Exception:
        logger.exception("job %s failed (inline)", call.describe())


def _perform_in_app(app: Flask, call: _Call) -> None:
    with app.app_context():
        perform(call.path, call.args, call.kwargs, call.job_id)


def _push(queue: rq.Queue, call: _Call, timeout_s: int, *, queue_id: str | None = None) -> None:
    """Queue ``call`` on Redis in one round trip: given a pipeline, RQ sends the queue's
    registration and the job together, where it would otherwise send them in two. A job with an
    id on the queue (``queue_id``, else its own ``job_id``) is unique there, saved by RQ's atomic
    script before the pipeline runs."""
    queue_id = queue_id or call.job_id
    try:
        with queue.connection.pipeline() as pipe:
            queue.enqueue_call(
                perform, args=(call.path, call.args, call.kwargs, call.job_id), job_id=queue_id,
                unique=queue_id is not None, retry=RETRY, timeout=timeout_s, description=call.describe(),
                pipeline=pipe,
            )
            pipe.execute()
    except DuplicateJobError:
        logger.info("job %s is already queued or kept; not queued again", call.describe())


# --------------------------------------------------------------------------- running a job


def perform(path: str, args: tuple[Any, ...], kwargs: dict[str, Any], job_id: str | None) -> None:
    """Run one job (inline or in a worker), behind the once-guard when it has an id."""
    func = resolve(path)
    if job_id is None:
        func(*args, **kwargs)
        return
    guard = _guard()
    if not guard.claim(job_id):
        logger.info("job %s [%s] already done; skipped", path, job_id)
        return
    try:
        func(*args, **kwargs)
    except BaseException:
        guard.release(job_id)
        raise
    guard.done(job_id)


def _guard() -> _RedisGuard | _MemoryGuard:
    job = rq.get_current_job()
    if job is not None:
        return _RedisGuard(job.connection, running_ttl_s=(job.timeout or DEFAULT_TIMEOUT_S) + 60)
    return _state(current_app).memory_guard


class _RedisGuard:
    """Job ids that are running or done, in Redis, shared by every worker."""

    def __init__(self, connection: redis.Redis, *, running_ttl_s: int) -> None:
        self.connection = connection
        self.running_ttl_s = running_ttl_s

    def claim(self, job_id: str) -> bool:
        """True: run it. False: it is done. Raises :class:`JobInProgress` while another run holds it."""
        key = ONCE_PREFIX + job_id
        if self.connection.set(key, b"running", nx=True, ex=self.running_ttl_s):
            return True
        if self.connection.get(key) == b"done":
            return False
        raise JobInProgress(f"job {job_id} is running elsewhere")

    def done(self, job_id: str) -> None:
        self.connection.set(ONCE_PREFIX + job_id, b"done", ex=ONCE_TTL_S)

    def release(self, job_id: str) -> None:
        self.connection.delete(ONCE_PREFIX + job_id)


class _MemoryGuard:
    """The same guard for inline jobs: this process only, the last ``size`` ids."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._done: OrderedDict[str, None] = OrderedDict()
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, job_id: str) -> bool:
        with self._lock:
            if job_id in self._done:
                return False
            if job_id in self._running:
                raise JobInProgress(f"job {job_id} is running in this process")
            self._running.add(job_id)
            return True

    def done(self, job_id: str) -> None:
        with self._lock:
            self._running.discard(job_id)
            self._done[job_id] = None
            while len(self._done) > self.size:
                self._done.popitem(last=False)

    def release(self, job_id: str) -> None:
        with self._lock:
            self._running.discard(job_id)


# --------------------------------------------------------------------------- worker


class _AppContextMixin:
    """Each job runs in an app context of its own, so it has a session of its own; between two
    jobs, the worker moves the outbox's committed jobs to its queue (:func:`relay`)."""

    app: Flask

    def dequeue_job_and_maintain_ttl(self, timeout: int | None,
                                     max_idle_time: int | None = None) -> tuple[rq.job.Job, rq.Queue] | None:
        """RQ's wait for the next job, looking at the outbox first, and again every
        :data:`RELAY_POLL_S` while the queue stays empty (``timeout`` None: a burst, once)."""
        if timeout is None:
            self._relay_all()
            return super().dequeue_job_and_maintain_ttl(None, max_idle_time)  # type: ignore[misc]
        idle_until = None if max_idle_time is None else time.monotonic() + max_idle_time
        while True:
            self._relay_all()
            result = super().dequeue_job_and_maintain_ttl(RELAY_POLL_S, RELAY_POLL_S)  # type: ignore[misc]
            if result is not None or getattr(self, "_stop_requested", False):
                return result
            if idle_until is not None and time.monotonic() >= idle_until:
                return None

    def _relay_all(self) -> None:
        try:
            while relay(self.app) == RELAY_BATCH:
                pass
        except Exception:  # Redis or the database away: the rows wait for the next look
            logger.exception("could not move the outbox's jobs to the queue; they stay in the outbox")

    def perform_job(self, job: rq.job.Job, queue: rq.Queue, execution: Any) -> bool:
        with self.app.app_context():
            return super().perform_job(job, queue, execution)  # type: ignore[misc]


class AppWorker(_AppContextMixin, rq.Worker):
    """RQ's forking worker: each job in a child process."""

    def main_work_horse(self, job: rq.job.Job, queue: rq.Queue) -> None:
        with self.app.app_context():
            db.engine.dispose(close=False)  # never share the parent's pooled connections
        super().main_work_horse(job, queue)


class AppSimpleWorker(_AppContextMixin, rq.SimpleWorker):
    """RQ's in-process worker (tests, debugging)."""


def make_worker(app: Flask, *, fork: bool = True) -> AppWorker | AppSimpleWorker:
    """A worker on the app's queue; raises :class:`JobError` without ``REDIS_URL``."""
    queue = _state(app).queue
    if queue is None:
        raise JobError("REDIS_URL is not set: jobs run inline and there is no queue to work on")
    worker_class = AppWorker if fork else AppSimpleWorker
    worker = worker_class([queue], connection=queue.connection)
    worker.app = app
    return worker


@click.command("worker")
@click.option("--burst", is_flag=True, help="Stop once the outbox and the queue are empty.")
@click.option("--simple", is_flag=True, help="Run jobs in this process instead of a forked child.")
@with_appcontext
def worker_command(burst: bool, simple: bool) -> None:
    """Move committed jobs from the outbox to Redis (REDIS_URL) and run them, retrying failures on schedule."""
    try:
        worker = make_worker(current_app._get_current_object(), fork=not simple)  # type: ignore[attr-defined]
    except JobError as exc:
        raise click.UsageError(str(exc)) from None
    worker.work(burst=burst, with_scheduler=True)


#: When the daily reminder to shops that owe round-ups runs (cron syntax, the server's local time).
REMIND_CRON = "0 8 * * *"


def remind_job() -> list[int]:
    """The daily job: remind the shops that owe round-ups (each at most once a week, so a
    second run the same day reminds nobody again). The worker runs it in the app's context."""
    from fundraising.shops import remind_late_shops

    reminded = remind_late_shops()
    current_app.logger.info("shop reminders: %s", ", ".join(f"shop {s}" for s in reminded) or "nobody is late")
    return reminded


def remind_borrowers_job() -> list[int]:
    """The daily job: remind the borrowers whose instalment falls due soon or who are late (each
    loan at most once a week, so a second run the same day reminds nobody again)."""
    from fundraising.loans_app import remind_borrowers

    reminded = remind_borrowers()
    current_app.logger.info("loan reminders: %s", ", ".join(f"loan {n}" for n in reminded) or "nobody to remind")
    return reminded


@click.command("scheduler")
@click.option("--interval", type=click.IntRange(10, 86_400), default=900, show_default=True,
              help="Seconds between two settlement runs.")
@with_appcontext
def scheduler_command(interval: int) -> None:
    """Enqueue the periodic jobs for the worker: settlement of campaigns past their deadline
    (every --interval seconds) and, daily at 08:00, the reminders to shops late with their
    round-ups and to borrowers whose instalment is due soon or late."""
    from rq.cron import CronScheduler

    from fundraising.settle import settle_job

    queue = _state(current_app._get_current_object()).queue  # type: ignore[attr-defined]
    if queue is None:
        raise click.UsageError("REDIS_URL is not set: run `fundraising campaigns settle`, "
                               "`fundraising shops remind` and `fundraising loans remind` from cron instead")
    scheduler = CronScheduler(connection=queue.connection, name="fundraising")
    scheduler.register(settle_job, queue.name, interval=interval, name="settle")
    scheduler.register(remind_job, queue.name, cron=REMIND_CRON, name="remind-shops")
    scheduler.register(remind_borrowers_job, queue.name, cron=REMIND_CRON, name="remind-borrowers")
    scheduler.start()


jobs_group = AppGroup("jobs", help="Background jobs.")
jobs_group.add_command(worker_command)
jobs_group.add_command(scheduler_command)
