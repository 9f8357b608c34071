"""The node's HTTP API (FastAPI, served by uvicorn): what reading stations and scripts talk to.

Every route but ``/health`` needs ``Authorization: Bearer TOKEN``; a user sees and cancels only their own jobs
(another user's job id is "not found", so ids leak nothing).  Uploads are streamed to disk with a size cap and
a per-read timeout (a client that sends slowly is cut off), named by the node, and checked before a job exists
(:mod:`.uploads`).  Each user has at most ``jobs_per_user`` queued or running jobs.  Every request that
touches a job is in the audit log; the service log carries no patient data.
"""

import asyncio
import json
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse

from ..io.errors import InputError
from .config import NodeConfig
from .security import Audit, Tokens
from .store import FINAL, JobStore
from .tasks import QUEUE, RESULT_FILES, make_app
from .uploads import FORMATS, unpack

__all__ = ["create_app"]


def create_app(cfg: NodeConfig, *, store: JobStore | None = None):
    """The FastAPI application of one node."""
    store = store or JobStore(cfg.broker)
    tokens, audit = Tokens(cfg.data_dir), Audit(cfg.data_dir)
    celery = make_app(cfg)
    app = FastAPI(
        title="BrainGemma3D node",
        description="AI report drafts for brain MRI beside the PACS (drafts are UNVERIFIED until a "
        "radiologist signs them on a reading station).",
        version="1",
    )

    @app.middleware("http")
    async def timeout(request: Request, call_next):
        try:
            return await asyncio.wait_for(call_next(request), timeout=cfg.request_timeout_s)
        except asyncio.TimeoutError:
            return JSONResponse({"detail": "request timed out"}, status_code=408)

    def user(request: Request) -> str:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        name = tokens.user(token)
        if name is None:
            audit.write(
                request.client.host if request.client else "?", "auth", "refused", path=request.url.path
            )
            raise HTTPException(
                401, "missing, unknown or revoked token", headers={"WWW-Authenticate": "Bearer"}
            )
        return name

    def own(job: str, who: str) -> dict:
        record = store.get(job) if job.isalnum() else None
        if record is None or record["owner"] != who:
            raise HTTPException(404, "no such job")
        return record

    def shown(record: dict) -> dict:
        keys = (
            "id",
            "state",
            "stage",
            "fraction",
            "message",
            "created",
            "updated",
            "error",
            "study",
            "source",
        )
        out = {k: record.get(k) for k in keys}
        out["files"] = [
            n for n in RESULT_FILES if record.get("results") and (Path(record["results"]) / n).is_file()
        ]
        return out

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    @app.get("/ready")
    def ready() -> JSONResponse:
        workers = [w for w in store.workers().values() if w["alive"]] if store.ping() else []
        ok = store.ping()
        return JSONResponse(
            {"ready": ok, "broker": ok, "workers": len(workers)}, status_code=200 if ok else 503
        )

    @app.post("/v1/jobs", status_code=202)
    async def submit(
        request: Request,
        format: str = Query(..., description=f"one of {', '.join(FORMATS)}"),
        explain: bool = Query(True),
        series: str | None = Query(None, max_length=64),
        fields: str | None = Query(None, max_length=4096, description="JSON: PDF header fields"),
        options: str | None = Query(None, max_length=4096, description="JSON: explanation options"),
        who: str = Depends(user),
    ) -> dict:
        if format not in FORMATS:
            raise HTTPException(422, f"format must be one of {', '.join(FORMATS)}")
        given = _request_options(fields, options)
        if store.active_count(who) >= cfg.jobs_per_user:
            audit.write(who, "submit", "refused: too many jobs")
            raise HTTPException(429, f"at most {cfg.jobs_per_user} queued or running jobs per user")
        declared = request.headers.get("content-length")
        limit = int(cfg.max_upload_mb * 1e6)
        if declared and declared.isdigit() and int(declared) > limit:
            audit.write(who, "submit", "refused: upload too large")
            raise HTTPException(413, f"the upload is larger than {cfg.max_upload_mb:g} MB")
        tmp_dir = Path(tempfile.mkdtemp(prefix="upload-", dir=cfg.folder("tmp")))
        try:
            upload = tmp_dir / "upload"
            size = 0
            with upload.open("wb") as sink:
                stream = request.stream().__aiter__()
                while True:
                    try:
                        chunk = await asyncio.wait_for(
                            stream.__anext__(), timeout=min(30.0, cfg.request_timeout_s)
                        )
                    except StopAsyncIteration:
                        break
                    except asyncio.TimeoutError:
                        audit.write(who, "submit", "refused: upload too slow")
                        raise HTTPException(408, "the upload was too slow") from None
                    size += len(chunk)
                    if size > limit:
                        audit.write(who, "submit", "refused: upload too large")
                        raise HTTPException(413, f"the upload is larger than {cfg.max_upload_mb:g} MB")
                    sink.write(chunk)
            if size == 0:
                raise HTTPException(422, "the upload is empty")
            staged = cfg.folder("uploads") / secrets.token_hex(8)
            try:  # hashing and unzipping take seconds on a large upload: off the event loop, which serves all
                path, digest = await run_in_threadpool(
                    unpack, upload, format, staged, max_unpacked_bytes=int(cfg.max_unpacked_mb * 1e6)
                )
            except InputError as exc:
                audit.write(who, "submit", f"refused: {exc.problem}")
                raise HTTPException(422, exc.problem) from None
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        job_options = {"explain": explain, "series": series, **given}
        job = store.create(who, source="http", inputs=[str(path)], options=job_options, input_sha256=digest)
        store.update(job, upload=str(staged))
        celery.send_task("braingemma3d.draft", args=[job], queue=QUEUE)
        audit.write(who, "submit", "queued", job=job, input_sha256=digest)
        return {"id": job, "state": "queued"}

    @app.post("/v1/studies/{study_uid}", status_code=202)
    def submit_study(study_uid: str, explain: bool = Query(True), who: str = Depends(user)) -> dict:
        from .listener import fetch_study

        if not cfg.pacs_source:
            raise HTTPException(409, "this node has no [pacs] source to fetch studies from")
        if not all(c.isdigit() or c == "." for c in study_uid) or len(study_uid) > 64:
            raise HTTPException(422, "not a DICOM UID")
        if store.active_count(who) >= cfg.jobs_per_user:
            raise HTTPException(429, f"at most {cfg.jobs_per_user} queued or running jobs per user")
        try:
            folder, digest = fetch_study(cfg, study_uid)
        except InputError as exc:
            audit.write(who, "fetch", f"failed: {exc.problem}", study=study_uid)
            raise HTTPException(502, exc.problem) from None
        job = store.create(
            who,
            source="study",
            inputs=[str(folder)],
            options={"explain": explain},
            study=study_uid,
            input_sha256=digest,
        )
        celery.send_task("braingemma3d.draft", args=[job], queue=QUEUE)
        audit.write(who, "submit", "queued", job=job, study=study_uid)
        return {"id": job, "state": "queued"}

    @app.get("/v1/jobs")
    def jobs(who: str = Depends(user)) -> list[dict]:
        return [shown(j) for j in store.jobs_of(who)]

    @app.get("/v1/jobs/{job}")
    def job_state(job: str, who: str = Depends(user)) -> dict:
        return shown(own(job, who))

    @app.get("/v1/jobs/{job}/events")
    async def job_events(job: str, who: str = Depends(user)):
        own(job, who)

        async def stream():
            seen, quiet = 0, time.monotonic()
            while True:
                events = store.events(job, seen)
                seen += len(events)
                for event in events:
                    yield f"data: {json.dumps(event)}\n\n"
                if events:
                    quiet = time.monotonic()
                elif time.monotonic() - quiet > 15:  # a long stage: a comment keeps proxies from closing it
                    quiet = time.monotonic()
                    yield ": still working\n\n"
                record = store.get(job)
                if record is None or record["state"] in FINAL and not store.events(job, seen):
                    yield f"event: end\ndata: {json.dumps(shown(record) if record else {})}\n\n"
                    return
                await asyncio.sleep(0.25)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/v1/jobs/{job}/files/{name}")
    def job_file(job: str, name: str, who: str = Depends(user)):
        record = own(job, who)
        if name not in RESULT_FILES or record["state"] != "done":
            raise HTTPException(404, "no such file")
        path = Path(record["results"]) / name
        if not path.is_file():
            raise HTTPException(404, "no such file")
        store.update(job, fetched=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        audit.write(who, "download", "ok", job=job, file=name)
        return FileResponse(path, filename=name)

    @app.post("/v1/jobs/{job}/cancel")
    def cancel(job: str, who: str = Depends(user)) -> dict:
        own(job, who)
        done = store.cancel(job)
        audit.write(who, "cancel", "requested" if done else "already finished", job=job)
        return shown(store.get(job))

    @app.get("/v1/status")
    def status(who: str = Depends(user)) -> dict:
        return node_status(store)

    @app.get("/status", response_class=HTMLResponse)
    def status_page(who: str = Depends(user)) -> str:
        s = node_status(store)
        rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in s["jobs"].items())
        workers = "".join(
            f"<tr><td>{n}</td><td>{w.get('device')}</td><td>{'alive' if w['alive'] else 'silent'}</td></tr>"
            for n, w in s["workers"].items()
        )
        errors = "".join(f"<li>{e['job']}: {e['error']}</li>" for e in s["recent_errors"])
        return (
            "<html><head><title>BrainGemma3D node</title></head><body><h1>BrainGemma3D node</h1>"
            f"<p>Queue: {s['queue']} waiting</p><table>{rows}</table><h2>Workers</h2><table>{workers}</table>"
            f"<h2>Recent errors</h2><ul>{errors}</ul></body></html>"
        )

    return app


def _request_options(fields: str | None, options: str | None) -> dict:
    """The header fields and explanation options of a submission, checked as the local worker checks them
    (unknown names, wrong types and impossible values are refused with one line: 422)."""
    from ..app.engine import request_explain_options, request_fields

    try:
        request = {"fields": json.loads(fields or "{}"), "options": json.loads(options or "{}")}
        checked = {"fields": request_fields(request)}
        request_explain_options(request)  # refuses unknown names, wrong types, impossible values
    except json.JSONDecodeError:
        raise HTTPException(422, "fields and options must be JSON objects") from None
    except InputError as exc:
        raise HTTPException(422, exc.problem) from None
    return checked | ({"explain_options": request["options"]} if request["options"] else {})


def node_status(store: JobStore) -> dict:
    """Queue length, jobs by state, workers and their devices, recent errors (job ids and one-line errors)."""
    jobs = store.all_jobs()
    by_state = {
        state: sum(j["state"] == state for j in jobs)
        for state in ("queued", "running", "done", "failed", "cancelled")
    }
    failed = sorted((j for j in jobs if j["state"] == "failed"), key=lambda j: j["updated"])[-10:]
    return {
        "queue": int(store.r.llen(QUEUE)),
        "jobs": by_state,
        "workers": store.workers(),
        "recent_errors": [{"job": j["id"], "error": j["error"], "when": j["updated"]} for j in failed],
    }
