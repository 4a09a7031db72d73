"""The protocol benchmark's peer: the official Inngest Python SDK served by FastAPI + uvicorn.

This is what RiverEdge runs today (riveredge.md §2): `inngest.fast_api.serve` on a FastAPI app,
one uvicorn worker process. It serves the same function as the Rust side of
`riveredge-bench protocol`: app id `bench`, function `echo` (composite id `bench-echo`), one
`step.run("step-1")` returning a small JSON value. Cloud mode (`INNGEST_DEV=0`) with the signing
key from `INNGEST_SIGNING_KEY`, so every request's signature is checked, as in production.

Run (the bench binary does this itself):
    INNGEST_DEV=0 INNGEST_SIGNING_KEY=signkey-test-<hex> \
        python -m uvicorn python_app:app --app-dir bench --host 127.0.0.1 --port 8299 \
        --workers 1 --no-access-log --log-level warning
"""

import os

import fastapi
import inngest
import inngest.fast_api

client = inngest.Inngest(
    app_id="bench",
    is_production=True,
    signing_key=os.environ["INNGEST_SIGNING_KEY"],
)


def _work() -> dict[str, object]:
    return {"ok": True, "n": 1}


@client.create_function(
    fn_id="echo",
    name="Echo",
    retries=3,
    trigger=inngest.TriggerEvent(event="bench/echo"),
)
async def echo(ctx: inngest.Context) -> dict[str, object]:
    return await ctx.step.run("step-1", _work)


app = fastapi.FastAPI()
inngest.fast_api.serve(app, client, [echo])
