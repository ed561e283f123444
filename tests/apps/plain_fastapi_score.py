"""FastAPI routes calling a score.py's collectors, without the middleware: async, and sync taking the request."""
from fastapi import FastAPI, Request

from mdc_middleware import ModelDataCollector

app = FastAPI()
inputs_dc = ModelDataCollector("plain", designation="inputs", feature_names=["id", "x"])
prediction_dc = ModelDataCollector("plain", designation="predictions", feature_names=["prediction"])


def score_rows(rows):
    inputs_dc.collect(rows)
    prediction_dc.collect([row[0] for row in rows])
    return [row[0] for row in rows]


@app.post("/score")
async def score(request: Request):
    return score_rows((await request.json())["data"])


@app.post("/score-sync")
def score_sync(request: Request, body: dict):
    return score_rows(body["data"])
