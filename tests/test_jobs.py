"""Background jobs: they run after commit, never for a rollback, once per job id, inline or in RQ.

The Redis half uses a real Redis (``TEST_REDIS_URL``, default ``redis://localhost:6379/15``, a
database of its own that the fixture flushes) and a real RQ worker. Where Redis is unreachable it
is skipped with the reason, unless ``REQUIRE_REDIS=1``, where it fails.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import rq
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from fundraising import jobs
from fundraising.config import ConfigError
from fundraising.extensions import db
from fundraising.models import OutboxJob
from ledger import Account, AccountType, open_account, run_in_transaction

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://localhost:6379/15")
REQUIRE_REDIS = os.environ.get("REQUIRE_REDIS") == "1"


# --------------------------------------------------------------------------- jobs the tests enqueue


def append_line(path: str, line: str | list[str]) -> None:
    """A deliberately non-idempotent effect: the number of lines is the number of runs."""
    with open(path, "a", encoding="utf-8") as file:
        file.write((line if isinstance(line, str) else " ".join(line)) + "\n")


def write_account_name(path: str, key: str) -> None:
    """Write what the job's own session sees of the account ``key``."""
    name = db.session.scalar(select(Account.name).where(Account.key == key))
    append_line(path, str(name))


def open_marker_account(key: str) -> None:
    run_in_transaction(db.session, lambda session: marker_account(session, key))


def explode() -> None:
    raise RuntimeError("this job fails on purpose")


def marker_account(session: Session, key: str) -> Account:
    return open_account(session, key=key, code="512", name=f"Marker {key}", type=AccountType.ASSET, currency="EUR")


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def jobs_app(make_app, fresh_database):
    """Factory: an app on a fresh database with jobs bound; inline and local outbox unless told."""

    def factory(**config: object) -> Flask:
        app = make_app(fresh_database, **{"REDIS_URL": None, "MAIL_SERVER": None, "MAIL_PORT": None, **config})
        jobs.init_app(app)  # harmless once create_app calls it too
        return app

    return factory


def _redis_test_url() -> str:
    """The test Redis database; each pytest-xdist worker takes the next lower number."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    offset = int(worker.removeprefix("gw") or 0)
    base, _, number = REDIS_URL.rpartition("/")
    return f"{base}/{int(number) - offset}" if number.isdigit() else REDIS_URL


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real, empty Redis database, flushed before and after the test."""
    url = _redis_test_url()
    connection = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        connection.ping()
    except redis.RedisError as exc:
        message = f"Redis unreachable at {url} ({type(exc).__name__}: {exc})"
        if REQUIRE_REDIS:
            pytest.fail(f"{message}, and REQUIRE_REDIS=1", pytrace=False)
        pytest.skip(f"{message}: Redis job tests skipped")
    connection.flushdb()
    yield url
    connection.flushdb()
    connection.close()


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def queue_of(app: Flask) -> rq.Queue:
    connection = redis.Redis.from_url(app.config["REDIS_URL"])
    return rq.Queue(app.config["JOBS_QUEUE"], connection=connection)


def account_names(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(Account.name).order_by(Account.key)))


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


# --------------------------------------------------------------------------- inline (no Redis)


def test_inline_job_runs_after_commit_and_sees_the_committed_row(jobs_app, tmp_path):
    app, seen = jobs_app(), tmp_path / "seen.txt"

    def work(session: Session) -> None:
        marker_account(session, "job:seen")
        jobs.enqueue(write_account_name, str(seen), "job:seen")
        session.flush()
        assert lines(seen) == []  # not while the transaction is open

    with app.app_context():
        run_in_transaction(db.session, work)
    assert lines(seen) == ["Marker job:seen"]


def test_inline_job_never_runs_for_a_rolled_back_transaction(jobs_app, tmp_path):
    app, ran = jobs_app(), tmp_path / "ran.txt"

    def work(session: Session) -> None:
        marker_account(session, "job:rolled-back")
        jobs.enqueue(append_line, str(ran), "ran")
        raise LookupError("the service failed after enqueueing")

    with app.app_context():
        with pytest.raises(LookupError):
            run_in_transaction(db.session, work)
        run_in_transaction(db.session, lambda session: None)  # a later commit does not revive it
    assert lines(ran) == []
    assert account_names(app) == []


def test_job_from_a_rolled_back_savepoint_is_dropped_and_the_others_run(jobs_app, tmp_path):
    app, ran = jobs_app(), tmp_path / "ran.txt"

    def work(session: Session) -> None:
        marker_account(session, "job:savepoint")
        jobs.enqueue(append_line, str(ran), "outer")
        with session.begin_nested():
            jobs.enqueue(append_line, str(ran), "released savepoint")
        savepoint = session.begin_nested()
        jobs.enqueue(append_line, str(ran), "rolled-back savepoint")
        savepoint.rollback()
        assert lines(ran) == []  # releasing a savepoint is no commit

    with app.app_context():
        run_in_transaction(db.session, work)
    assert lines(ran) == ["outer", "released savepoint"]


def test_job_enqueued_outside_a_transaction_runs_at_once(jobs_app, tmp_path):
    app, ran = jobs_app(), tmp_path / "ran.txt"
    with app.app_context():
        jobs.enqueue(append_line, str(ran), "now")
        assert lines(ran) == ["now"]


def test_job_enqueued_before_any_sql_waits_when_the_transaction_was_begun(jobs_app, tmp_path):
    """Autobegin opens a transaction at the first SQL; before it, enqueue runs at once unless
    the unit of work began the transaction explicitly."""
    app, ran = jobs_app(), tmp_path / "ran.txt"

    def work(session: Session) -> None:
        jobs.enqueue(append_line, str(ran), "after commit")
        raise LookupError("rolled back")

    with app.app_context():
        db.session.begin()
        with pytest.raises(LookupError):
            run_in_transaction(db.session, work)
    assert lines(ran) == []


def test_session_closed_without_commit_runs_nothing(jobs_app, tmp_path):
    app, ran = jobs_app(), tmp_path / "ran.txt"
    with app.app_context():
        db.session.execute(select(1))  # opens a transaction that is never committed
        jobs.enqueue(append_line, str(ran), "never")
    with app.app_context():
        run_in_transaction(db.session, lambda session: None)
    assert lines(ran) == []


def give_view() -> str:
    """A view as the web layer writes one: one unit of work, then a page."""

    def work(session: Session) -> None:
        marker_account(session, "job:request")
        jobs.enqueue(explode)

    run_in_transaction(db.session, work)
    return "thank you"


def test_failing_inline_job_is_logged_and_the_request_still_succeeds(jobs_app, caplog):
    app = jobs_app()
    # The view runs in a real request context; the app's routes and access rules are not the point.
    with app.test_request_context("/give", method="POST"), caplog.at_level(logging.ERROR, logger="fundraising.jobs"):
        assert give_view() == "thank you"
    assert "job tests.test_jobs.explode failed (inline)" in caplog.text
    assert "this job fails on purpose" in caplog.text
    assert account_names(app) == ["Marker job:request"]


def test_same_job_id_runs_once_inline(jobs_app, tmp_path):
    app, ran = jobs_app(), tmp_path / "ran.txt"

    def work(session: Session) -> None:
        session.execute(select(1))
        jobs.enqueue(append_line, str(ran), "once", job_id="thank-you-42")
        jobs.enqueue(append_line, str(ran), "once", job_id="thank-you-42")

    with app.app_context():
        run_in_transaction(db.session, work)
        run_in_transaction(db.session, work)
    assert lines(ran) == ["once"]


def test_failed_inline_job_with_an_id_can_run_again(jobs_app, tmp_path):
    app = jobs_app()
    with app.app_context():
        jobs.enqueue(explode, job_id="retry-me")
        jobs.enqueue(append_line, str(tmp_path / "x"), "x", job_id="retry-me")
    assert lines(tmp_path / "x") == ["x"]  # the failure released the id


def test_enqueue_refuses_what_a_worker_could_not_run(jobs_app):
    app = jobs_app()

    def nested() -> None:
        """Not importable by path."""

    with app.app_context():
        with pytest.raises(jobs.NotImportable):
            jobs.enqueue(lambda: None)
        with pytest.raises(jobs.NotImportable):
            jobs.enqueue(nested)
        with pytest.raises(jobs.NotImportable):
            jobs.enqueue("tests.test_jobs.no_such_job")
        with pytest.raises(ValueError, match="job_id"):
            jobs.enqueue(append_line, "/dev/null", "x", job_id="has spaces/and slashes")
        with pytest.raises(ValueError, match="outbox-"):
            jobs.enqueue(append_line, "/dev/null", "x", job_id="outbox-7")  # the outbox's own names
        with pytest.raises(TypeError):
            jobs.enqueue(append_line, socket.socket(), "unpicklable")


def test_enqueue_by_import_path_is_the_same_as_by_function(jobs_app, tmp_path):
    app, ran = jobs_app(), tmp_path / "ran.txt"
    with app.app_context():
        jobs.enqueue("tests.test_jobs.append_line", str(ran), line="by path")
    assert lines(ran) == ["by path"]


def test_arguments_are_copied_when_the_job_is_enqueued(jobs_app, tmp_path):
    app, ran = jobs_app(), tmp_path / "ran.txt"
    words = ["before"]

    def work(session: Session) -> None:
        marker_account(session, "job:copy")
        jobs.enqueue(append_line, str(ran), line=words)
        words.append("after")

    with app.app_context():
        run_in_transaction(db.session, work)
    assert lines(ran) == ["before"]


def test_after_commit_callback_runs_once_after_commit(jobs_app):
    app, calls = jobs_app(), []
    with app.app_context():
        run_in_transaction(db.session, lambda session: jobs.after_commit(lambda: calls.append("done")))
        run_in_transaction(db.session, lambda session: None)
    assert calls == ["done"]


def test_malformed_redis_url_is_one_clear_line(make_app, database):
    with pytest.raises(ConfigError, match="REDIS_URL must be redis://"):
        jobs.init_app(make_app(database, REDIS_URL="http://localhost:6379"))  # create_app may raise first


def test_worker_command_without_redis_says_why(jobs_app):
    result = jobs_app().test_cli_runner().invoke(jobs.worker_command, ["--burst"])
    assert result.exit_code == 2
    assert "REDIS_URL is not set" in result.output


def outboxed(app: Flask) -> list[tuple[str, str]]:
    """(path, job id) of the jobs waiting in the outbox, oldest first."""
    with app.app_context():
        return [tuple(row) for row in db.session.execute(
            select(OutboxJob.path, OutboxJob.job_id).order_by(OutboxJob.id))]


def test_redis_down_keeps_the_job_in_the_outbox_until_it_is_back(jobs_app, redis_url, tmp_path):
    down = jobs_app(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")

    def work(session: Session) -> None:
        marker_account(session, "job:no-redis")
        jobs.enqueue(append_line, str(tmp_path / "x"), "x")

    with down.app_context():
        run_in_transaction(db.session, work)  # Redis is not asked: the commit does not depend on it
    assert account_names(down) == ["Marker job:no-redis"]
    [(path, job_id)] = outboxed(down)
    assert path == "tests.test_jobs.append_line" and job_id.startswith("outbox-")
    with pytest.raises(redis.RedisError):
        jobs.relay(down)
    assert outboxed(down) == [(path, job_id)]  # still there

    up = jobs_app(REDIS_URL=redis_url, JOBS_QUEUE=f"test-{uuid.uuid4().hex[:8]}")  # the same database
    drain(up)
    assert lines(tmp_path / "x") == ["x"] and outboxed(up) == []
    guards = redis.Redis.from_url(redis_url).keys(jobs.ONCE_PREFIX + "*")
    assert guards == []  # a job named by the outbox alone leaves no once-guard key behind
    assert jobs.relay(up) == 0


# --------------------------------------------------------------------------- RQ (real Redis, real worker)


@pytest.fixture
def rq_app(jobs_app, redis_url):
    """Factory: an app whose jobs go to a queue of its own in the test Redis."""
    return lambda **config: jobs_app(REDIS_URL=redis_url, JOBS_QUEUE=f"test-{uuid.uuid4().hex[:8]}", **config)


def drain(app: Flask) -> None:
    """Move the outbox's jobs to the queue and run them in this process with the real RQ
    machinery, then stop."""
    jobs.make_worker(app, fork=False).work(burst=True)


def test_job_goes_through_a_real_forking_worker_after_commit(rq_app):
    app = rq_app()
    queue = queue_of(app)

    def work(session: Session) -> None:
        marker_account(session, "job:before-rq")
        jobs.enqueue(open_marker_account, "job:rq", job_id="open-job-rq")
        assert queue.count == 0  # nothing is queued before the commit

    with app.app_context():
        run_in_transaction(db.session, work)
    assert queue.count == 0 and outboxed(app) == [("tests.test_jobs.open_marker_account", "open-job-rq")]
    assert jobs.relay(app) == 1 and jobs.relay(app) == 0
    assert queue.count == 1 and outboxed(app) == []
    job = queue.jobs[0]
    assert (job.id, job.retries_left, job.retry_intervals) == ("open-job-rq", 3, [10, 60, 300])

    result = app.test_cli_runner().invoke(jobs.worker_command, ["--burst"])
    assert result.exit_code == 0, result.output
    assert account_names(app) == ["Marker job:before-rq", "Marker job:rq"]
    assert job.get_status(refresh=True) == rq.job.JobStatus.FINISHED


def test_rolled_back_transaction_queues_nothing(rq_app):
    app = rq_app()

    def work(session: Session) -> None:
        marker_account(session, "job:never-either")
        jobs.enqueue(open_marker_account, "job:never")
        raise LookupError("rolled back")

    with app.app_context(), pytest.raises(LookupError):
        run_in_transaction(db.session, work)
    assert outboxed(app) == [] and jobs.relay(app) == 0
    assert queue_of(app).count == 0


def test_same_job_id_enqueued_twice_has_one_effect(rq_app, tmp_path):
    app, ran = rq_app(), tmp_path / "ran.txt"

    def work(session: Session) -> None:
        session.execute(select(1))
        jobs.enqueue(append_line, str(ran), "once", job_id="receipt-7")
        jobs.enqueue(append_line, str(ran), "once", job_id="receipt-7")

    with app.app_context():
        run_in_transaction(db.session, work)
        assert jobs.relay(app) == 2  # both rows moved; the second is the same job
        assert queue_of(app).count == 1
        drain(app)
        run_in_transaction(db.session, work)  # RQ still keeps the finished job: not queued again
        assert jobs.relay(app) == 2
        assert queue_of(app).count == 0
        queue_of(app).connection.delete("rq:job:receipt-7")  # RQ forgot it (result TTL): the guard holds
        run_in_transaction(db.session, work)
        drain(app)
    assert lines(ran) == ["once"]


def test_failed_job_is_scheduled_for_a_bounded_retry(rq_app):
    app = rq_app()
    with app.app_context():
        jobs.enqueue(explode, job_id="explode-1")
        drain(app)
    job = rq.job.Job.fetch("explode-1", connection=queue_of(app).connection)
    assert job.get_status() == rq.job.JobStatus.SCHEDULED
    assert job.retries_left == 2


def test_a_waiting_worker_takes_a_job_committed_after_it_started(rq_app, tmp_path):
    """The worker looks at the outbox again while its queue stays empty: a job committed while it
    waits runs within a few seconds, without a burst or a restart."""
    app, ran = rq_app(), tmp_path / "late.txt"

    def commit_later() -> None:
        time.sleep(0.5)
        with app.app_context():
            run_in_transaction(db.session, lambda session: (session.execute(select(1)),
                                                            jobs.enqueue(append_line, str(ran), "late")))

    committer = threading.Thread(target=commit_later)
    committer.start()
    began = time.monotonic()
    jobs.make_worker(app, fork=False).work(max_idle_time=4)  # returns once idle for 4 s after the job
    committer.join()
    assert lines(ran) == ["late"] and outboxed(app) == []
    assert time.monotonic() - began < 15
