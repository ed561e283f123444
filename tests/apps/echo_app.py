"""A FastAPI app that answers every request with its own body: for the hostile corpus against a real server.

MDC_ENABLED decides whether the middleware collects; the app is the same either way.
"""
from fastapi import FastAPI, Request, Response

from mdc_middleware import DataCollectionMiddleware

app = FastAPI()
app.add_middleware(DataCollectionMiddleware, routes=["/echo", "/v2/*/models/{model}/*/predict", "GET /query"])


@app.get("/healthz")
def healthz():
    return {"ok": True}


@app.api_route("/{path:path}", methods=["GET", "POST", "PUT"])
async def echo(request: Request):
    body = await request.body()
    return Response(body, media_type=request.headers.get("content-type", "application/octet-stream"))
