"""The ceiling: a bare FastAPI endpoint that returns a constant, run under uvicorn exactly as
``twinnet serve`` runs (bench/serve.py starts it as its own process).

    python bench/_bare_app.py PORT
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI

from twinnet.serve import uvicorn_options

app = FastAPI()


@app.post("/verify")
@app.post("/identify")
async def constant() -> dict[str, object]:
    return {"same": True, "score": 0.5}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, **uvicorn_options("127.0.0.1", int(sys.argv[1])))
