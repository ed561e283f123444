"""What the middleware decides per request, for ASGI and WSGI alike: which route plan captures it, or why
none does (counted); sampling; which statuses are kept; the ids a request carries; how an exchange hands
its capture over, and that a fault of ours is counted, never raised."""
import logging

import pytest

from mdc_middleware import Schema, Settings
from mdc_middleware.capture.exchange import Exchange
from mdc_middleware.capture.policy import (_MAX_CACHED_PATHS, MAX_MODELS_PER_ROUTE, UNMATCHED_BEFORE_WARNING,
                                            CapturePolicy)
from mdc_middleware.payloads.captured_request import BODY_NOT_READ, plan_by_id
from mdc_middleware.pipeline.writer import Writer
from mdc_middleware.storage.local import LocalSink


@pytest.fixture
def writer(tmp_path):
    writer = Writer(LocalSink(tmp_path), flush_interval=60)
    yield writer
    writer.shutdown(5)


def policy(writer, routes=None, **settings) -> CapturePolicy:
    routes = routes if routes is not None else {"POST /score": Schema(model_name="iris", model_version="2")}
    return CapturePolicy(routes, Settings.from_env({}, enabled=True, **settings), writer)


def skipped(writer) -> dict:
    return writer.metrics.snapshot()["skipped"]


def test_a_declared_route_is_captured_with_its_schemas_targets_and_others_pass_through(writer):
    chosen = policy(writer)
    plan = chosen.select("POST", "/score")
    assert plan is not None and plan_by_id(plan.id) is plan
    assert (plan.inputs_target.model_name, plan.inputs_target.model_version) == ("iris", "2")
    assert (plan.inputs_target.designation, plan.predictions_target.designation) == ("inputs", "predictions")
    assert chosen.select("GET", "/score") is None and chosen.select("POST", "/scores") is None
    assert chosen.select("POST", "/score") is plan  # from the cache: made once


def test_a_mounted_app_matches_routes_declared_with_or_without_its_prefix(writer):
    chosen = policy(writer, {"POST /api/score": Schema()})
    assert chosen.select("POST", "/score", full_path="/api/score") is not None
    assert chosen.select("POST", "/score") is None


def unmatched_warnings(caplog) -> list:
    return [r.getMessage() for r in caplog.records if "none to a route" in r.getMessage()]


def test_a_route_no_request_meets_is_warned_of_once_naming_where_requests_went(writer, caplog):
    """A typo in a route (``/scroe``) collected nothing and said nothing."""
    chosen = policy(writer, {"POST /scroe": Schema()})
    with caplog.at_level(logging.WARNING, logger="mdc_middleware"):
        for _ in range(10):
            chosen.select("GET", "/healthz")  # probes: not of a method the routes take
        for i in range(UNMATCHED_BEFORE_WARNING - 1):
            assert chosen.select("POST", "/score" if i % 4 else "/predict\n") is None
        assert unmatched_warnings(caplog) == []
        chosen.select("POST", "/score")
        for _ in range(100):
            chosen.select("POST", "/score")
    assert unmatched_warnings(caplog) == [
        "mdc: 20 requests so far and none to a route collected (POST /scroe); they went to POST /score (15), "
        "POST '/predict\\n' (5). Nothing is collected from them: check MDC_ROUTES or routes= for a typo (in the path "
        "or the method)"]


def test_a_route_given_the_wrong_method_is_warned_of_too(writer, caplog):
    """``MDC_ROUTES=/score`` takes POST; the app's scoring route is a PUT: nothing was collected, and the PUTs
    were not counted, so nothing was said either."""
    chosen = policy(writer, {"/score": Schema()})
    with caplog.at_level(logging.WARNING, logger="mdc_middleware"):
        for _ in range(UNMATCHED_BEFORE_WARNING):
            assert chosen.select("PUT", "/score") is None
    assert unmatched_warnings(caplog) == [
        "mdc: 20 requests so far and none to a route collected (POST /score); they went to PUT /score (20). Nothing "
        "is collected from them: check MDC_ROUTES or routes= for a typo (in the path or the method)"]


@pytest.mark.parametrize("routes", [{"POST /score": Schema()}, {}])
def test_routes_that_meet_requests_are_never_warned_of(writer, caplog, routes):
    chosen = policy(writer, routes)
    with caplog.at_level(logging.WARNING, logger="mdc_middleware"):
        assert chosen.select("POST", "/score") is not None  # a declared route, or every POST
        for i in range(3 * UNMATCHED_BEFORE_WARNING):
            chosen.select("POST", f"/other/{i}")
            chosen.select("POST", "/score")
    assert unmatched_warnings(caplog) == []


def test_mdc_routes_other_than_the_apps_own_are_said_to_be_unused(writer, caplog):
    """An operator's MDC_ROUTES on AKS, for an app that gives its routes in code, was ignored without a word."""
    with caplog.at_level(logging.WARNING, logger="mdc_middleware"):
        for env_routes, enabled in (("/scroe,GET /predict", True),
                                    ("POST /score", True),  # the same routes: nothing to say
                                    ("/elsewhere", False)):  # not collecting: nothing either
            CapturePolicy({"/score": Schema()}, Settings.from_env({"MDC_ROUTES": env_routes}, enabled=enabled), writer)
    assert [r.getMessage() for r in caplog.records] == [
        "mdc: MDC_ROUTES (POST /scroe, GET /predict) is not used: the app gives its routes in code (POST /score), "
        "and those are collected"]


def test_collection_switched_off_captures_nothing(tmp_path, writer):
    chosen = CapturePolicy({"/score": Schema()}, Settings.from_env({}, enabled=False), writer)
    assert chosen.select("POST", "/score") is None


def test_models_named_in_paths_are_bounded_and_bad_names_refused(writer):
    chosen = policy(writer, {"POST /models/{model}/score": Schema()})
    plans = {chosen.select("POST", f"/models/m{i}/score").id for i in range(MAX_MODELS_PER_ROUTE)}
    assert len(plans) == MAX_MODELS_PER_ROUTE
    assert chosen.select("POST", "/models/one-too-many/score") is None
    assert chosen.select("POST", "/models/m0/score").inputs_target.model_name == "m0"  # known ones still go
    assert chosen.select("POST", "/models/../score") is None
    assert skipped(writer) == {"too_many_models_in_path": 1, "bad_model_in_path": 1}  # ".": never a folder


def test_the_cache_of_paths_is_bounded_whatever_clients_send(writer):
    chosen = policy(writer, {"POST /items/*": Schema()})
    for i in range(_MAX_CACHED_PATHS + 10):
        assert chosen.select("POST", f"/items/{i}") is not None
    assert len(chosen._by_path) <= _MAX_CACHED_PATHS


def test_sampling_keeps_about_its_share_and_counts_the_rest(writer):
    chosen = policy(writer, sample_rate=0.25)
    kept = sum(chosen.select("POST", "/score") is not None for _ in range(4000))
    assert 800 < kept < 1200
    assert skipped(writer)["sampled_out"] == 4000 - kept


@pytest.mark.parametrize("collect_status, kept", [("2xx", {200, 201, 299}), ("all", {200, 201, 299, 400, 500})])
def test_which_statuses_are_kept(writer, collect_status, kept):
    chosen = policy(writer, collect_status=collect_status)
    assert {s for s in (200, 201, 299, 400, 500) if chosen.wants_status(s)} == kept


def test_a_usable_client_request_id_is_kept_and_a_hostile_one_replaced(writer):
    chosen = policy(writer)
    plan = chosen.select("POST", "/score")

    def ids(headers):
        exchange = Exchange(chosen, plan, "POST", b"", headers)
        return exchange.correlation_id, exchange.request_id

    correlation, request = ids({"x-ms-request-id": "abc-1"})
    assert request == "abc-1" and correlation != request
    for hostile in ("a,b", "x\ny", "r" * 129):
        correlation, request = ids({"x-request-id": hostile})
        assert request == correlation
    assert len({ids({})[0] for _ in range(10_000)}) == 10_000


def test_an_exchange_hands_over_its_capture_or_counts_why_not(writer, monkeypatch):
    chosen = policy(writer)
    plan = chosen.select("POST", "/score")
    queued = []
    monkeypatch.setattr(writer, "submit_capture", queued.append)

    exchange = Exchange(chosen, plan, "POST", b"", {"content-type": "application/json"})
    exchange.request.feed(b'{"data": [[1]]}')
    exchange.request_complete = True
    exchange.response = type(exchange.request)(plan.max_body_bytes, "application/json")
    exchange.response.feed(b"[0]")
    exchange.hand_over()
    (capture,) = queued
    assert capture[0] == plan.id and capture[1] == b'{"data": [[1]]}' and capture[3] == b"[0]"
    assert capture[6:8] == (exchange.correlation_id, exchange.request_id)

    unread = Exchange(chosen, plan, "POST", b"", {})
    unread.response = type(unread.request)(plan.max_body_bytes, None)
    unread.hand_over()
    assert queued[1][1] == BODY_NOT_READ  # the app never read the body: said so, not guessed

    refused = Exchange(chosen, plan, "POST", b"", {})
    refused.status = 404
    refused.hand_over()
    assert len(queued) == 2 and skipped(writer)["status_404"] == 1


def test_a_fault_of_ours_is_logged_and_counted_never_raised(writer, caplog):
    chosen = policy(writer)
    exchange = Exchange(chosen, chosen.select("POST", "/score"), "POST", b"", {})
    with caplog.at_level(logging.ERROR, logger="mdc_middleware"):
        try:
            raise RuntimeError("a bug of ours")
        except RuntimeError:
            exchange.internal_error()
    assert writer.metrics.snapshot()["internal_errors"] == 1
    assert "the request is unaffected" in caplog.text
