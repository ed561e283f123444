"""A FastAPI app that streams the request body without keeping it: for huge-body and disconnect tests.

MDC_ENABLED decides whether the middleware collects; the app is the same either way.
"""
import hashlib

from fastapi import FastAPI, Request

from mdc_middleware import DataCollectionMiddleware

app = FastAPI()
app.add_middleware(DataCollectionMiddleware, routes=["/count"])


@app.get("/healthz")
def healthz():
    return {"ok": True}


@app.post("/count")
async def count(request: Request):
    digest, size = hashlib.sha256(), 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}
