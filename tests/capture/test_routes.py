"""Route patterns: paths, globs, and placeholders as web frameworks write them."""
import pytest

from mdc_middleware import ConfigError, Route, Schema
from mdc_middleware.capture.routes import RouteTable, model_in_path


@pytest.mark.parametrize("pattern,path,values", [
    ("/score", "/score", {}),
    ("/score", "/score/", None),
    ("/v1/*/predict", "/v1/a/b/predict", {}),
    ("/models/{model}/predict", "/models/iris/predict", {"model": "iris"}),
    ("/models/{model}/predict", "/models/a/b/predict", None),  # a placeholder is one segment
    ("/v1/models/{model}:predict", "/v1/models/iris:predict", {"model": "iris"}),
    ("/t/{tenant}/m/{model_name}/v/{model_version}", "/t/x/m/iris/v/2",
     {"tenant": "x", "model_name": "iris", "model_version": "2"}),
    ("/{model}/*/{model}", "/a/b/c", {"model": "a"}),  # a repeated name keeps its first value
    ("/{model}.json", "/iris.json", {"model": "iris"}),  # regex characters in the pattern are literal
    ("/{model}.json", "/irisxjson", None),
])
def test_path_values(pattern, path, values):
    assert Route(pattern, Schema()).path_values("POST", path) == values


def test_methods_and_the_first_route_that_matches():
    table = RouteTable([Route("/m/{model}", Schema(), methods=("PUT",)), Route("/m/*", Schema())])
    assert table.match("POST", "/m/iris")[0].pattern == "/m/*"
    assert table.match("PUT", "/m/iris")[1] == {"model": "iris"}
    assert table.match("GET", "/m/iris") is None


def test_model_in_path():
    assert model_in_path({"model": "iris", "version": "2", "tenant": "x"}) == ("iris", "2")
    assert model_in_path({"tenant": "x"}) == (None, None)


@pytest.mark.parametrize("text,methods,pattern", [
    ("/score", ("POST",), "/score"),
    ("GET /predict", ("GET",), "/predict"),
    ("GET|POST  /models/{model}", ("GET", "POST"), "/models/{model}"),
    ("post /score", ("POST",), "/score"),  # methods in any case
    ("get|Post /predict", ("GET", "POST"), "/predict"),
])
def test_routes_given_as_text_may_name_their_methods(text, methods, pattern):
    (route,) = RouteTable(text).routes
    assert (route.methods, route.pattern) == (methods, pattern)


def test_glob_routes_match_as_fnmatch_does():
    """The linear-time matcher agrees with fnmatch on every pattern of stars, ? and text it is given."""
    import fnmatch
    import random

    from mdc_middleware.capture.routes import _matcher

    rng = random.Random(0)
    for _ in range(5000):
        pattern = "".join(rng.choice("ab/*?") for _ in range(rng.randint(1, 7)))
        path = "".join(rng.choice("ab/") for _ in range(rng.randint(0, 9)))
        assert (_matcher(pattern).match(path) is not None) == fnmatch.fnmatchcase(path, pattern), (pattern, path)


def test_placeholders_take_one_segment_and_name_it():
    from mdc_middleware.capture.routes import _matcher

    matcher = _matcher("/v2/*/models/{model}/*/predict")
    assert matcher.match("/v2/a/b/models/m1/x/y/predict") == {"model": "m1"}
    assert matcher.match("/v2/a/models/m1/predict") is None
    assert _matcher("/a/{m}.json").match("/a/b.c.json") == {"m": "b.c"}
    assert _matcher("/a/{m}/b").match("/a/x/y/b") is None


def test_a_client_controlled_long_path_is_not_matched_against_globs():
    """60 KB paths (the hostile corpus's) are never run through a glob: no capture, and no cache entry."""
    from mdc_middleware import Settings
    from mdc_middleware.capture.policy import CapturePolicy
    from mdc_middleware.capture.routes import MAX_MATCHED_PATH

    policy = CapturePolicy(["/v2/*/models/{model}/*/predict"], Settings.from_env({}), writer=None)
    long_path = "/v2/" + "models/x/" * 6000 + "q/predict"
    assert len(long_path) > MAX_MATCHED_PATH
    assert policy._plan_for("POST", long_path) is None and not policy._by_path
    assert policy._plan_for("POST", "/v2/a/models/m/b/predict") is not None


def test_a_trailing_slash_does_not_matter_either_way():
    """The app redirects (Starlette, 307) or refuses (Flask, 404) the form it does not serve: no 2xx is
    collected twice, and a route written with the other form than the app's still collects."""
    assert RouteTable("/score").match("POST", "/score/") is not None
    assert RouteTable("/score/").match("POST", "/score")[0].pattern == "/score/"
    assert RouteTable("/models/{model}").match("POST", "/models/iris/")[1] == {"model": "iris"}
    assert RouteTable("/score").match("POST", "/scores") is None
    assert RouteTable("/score").match("POST", "/") is None


@pytest.mark.parametrize("text,said", [
    ("score", "request paths start with '/', so it would never match; did you mean '/score'?"),
    ("http://localhost:8000/score", "a route is the request's path, without scheme and host; did you mean "
                                    "'/score'?"),
    ("POST https://svc.example.com", "without scheme and host; did you mean '/'?"),
    ("/score;/predict", "routes are separated by commas; did you mean '/score,/predict'?"),
    ("PUSH /predict", "PUSH is not an HTTP method"),
])
def test_a_route_that_could_never_match_fails_start_up_saying_what_was_meant(text, said):
    with pytest.raises(ConfigError) as raised:
        RouteTable(None, (text,))
    assert str(raised.value).startswith(f"route {text!r} (MDC_ROUTES or routes=): ") and said in str(raised.value)
