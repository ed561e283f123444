"""A FastAPI app whose middleware takes its routes from MDC_ROUTES alone, as an AKS deployment configures it."""
from fastapi import FastAPI

from mdc_middleware import DataCollectionMiddleware

app = FastAPI()
app.add_middleware(DataCollectionMiddleware)


@app.get("/healthz")
def healthz():
    return {"ok": True}


@app.post("/score")
def score(body: dict):
    return {"predictions": [len(row) for row in body["data"]]}
