"""A FastAPI app for load tests: every input row carries a unique id, every prediction echoes it."""
import os

from fastapi import FastAPI, Request, Response

from mdc_middleware import DataCollectionMiddleware, Schema

app = FastAPI()
app.add_middleware(DataCollectionMiddleware,
                   routes={"/score": Schema(inputs=["id", "thread", "x"], predictions=["id"], model_name="numbered")})


@app.get("/healthz")
def healthz():
    return {"ok": True}


@app.post("/score")
async def score(request: Request, response: Response):
    rows = (await request.json())["data"]
    response.headers["x-worker-pid"] = str(os.getpid())  # which worker answered: tests/system/test_process_death.py
    return {"predictions": [row[0] for row in rows]}
