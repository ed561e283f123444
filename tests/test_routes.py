"""Route patterns: paths, globs, and placeholders as web frameworks write them."""
import pytest

from mdc_middleware import Route, Schema
from mdc_middleware.routes import RouteTable, model_in_path


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
])
def test_routes_given_as_text_may_name_their_methods(text, methods, pattern):
    (route,) = RouteTable(text).routes
    assert (route.methods, route.pattern) == (methods, pattern)
