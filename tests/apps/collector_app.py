"""A FastAPI app that collects with ModelDataCollector only (no middleware), as a score.py port would."""
from fastapi import FastAPI, Request

from mdc_middleware import ModelDataCollector

app = FastAPI()
inputs = ModelDataCollector("plain", designation="inputs", feature_names=["x"])


@app.get("/healthz")
def healthz():
    return {"ok": True}


@app.post("/score")
async def score(request: Request):
    rows = (await request.json())["data"]
    inputs.collect(rows)
    return {"predictions": [len(rows)]}
