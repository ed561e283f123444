"""A FastAPI scoring service whose inputs and predictions are collected by the middleware.

    MDC_ENABLED=true uvicorn examples.fastapi_app:app --port 8000
"""
from __future__ import annotations

from typing import List

from fastapi import FastAPI
from pydantic import BaseModel

from mdc_middleware import DataCollectionMiddleware, Schema

try:
    from examples.iris_model import FEATURES, class_names, load_model
except ImportError:  # run from inside examples/
    from iris_model import FEATURES, class_names, load_model


class ScoreRequest(BaseModel):
    data: List[List[float]]


app = FastAPI(title="iris scoring")
app.add_middleware(
    DataCollectionMiddleware,
    routes={"/score": Schema(inputs=FEATURES, predictions=["species"], model_name="iris", model_version="1")},
)


@app.get("/healthz")
def healthz() -> dict:
    return {"ok": True}


@app.post("/score")
def score(request: ScoreRequest) -> dict:
    names = class_names()
    predicted = load_model().predict(request.data)
    return {"predictions": [names[i] for i in predicted]}
