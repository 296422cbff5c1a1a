"""FastAPI dependencies, as Annotated aliases that routers declare in their signatures.

FastAPI runs a plain ``def`` dependency in a worker thread; a thread hop costs about a tenth
of a millisecond of CPU, a fair share of a status read. So the dependencies that do no I/O
are ``async def`` (run in the event loop), and those that touch the database stay ``def``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from celery import Celery
from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from slimforge.app.artifacts.storage import ArtifactStore
from slimforge.app.auth.service import Principal, authenticate
from slimforge.app.errors import Forbidden
from slimforge.app.limits.slots import SessionSlots
from slimforge.app.settings import Settings
from slimforge.contract.scopes import SCOPES, Scope


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session_factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


async def get_session(request: Request) -> AsyncIterator[Session]:
    # A slot first (app.limits.slots: waits in the event loop, never on the pool). The
    # session is made in the event loop: it does no I/O until its first query (in the route's
    # thread). Closing one that did returns its connection with a ROLLBACK, a database round
    # trip, so that happens in a worker thread.
    slots: SessionSlots = request.app.state.session_slots
    async with slots.hold():
        session: Session = request.app.state.session_factory()
        try:
            yield session
        finally:
            if session.in_transaction():
                await run_in_threadpool(session.close)
            else:
                session.close()


async def get_celery(request: Request) -> Celery:
    celery: Celery = request.app.state.celery
    return celery


async def get_store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.store
    return store


SettingsDep = Annotated[Settings, Depends(get_settings)]
# One store per app: an S3 store holds a boto3 client, too costly to build per request.
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
# Closed when the route returns, before the response is sent: a streamed answer (server-sent
# events) must not keep its slot and connection for as long as the client listens.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]
CeleryDep = Annotated[Celery, Depends(get_celery)]


def get_principal(
    request: Request,
    session: SessionDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    principal = authenticate(session, authorization=authorization)
    request.state.tenant = principal.tenant_name  # for the request's log line
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_scope(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency giving the caller's Principal if its key has ``scope`` (or a higher one),
    else 403 naming the scope."""

    async def check(principal: PrincipalDep) -> Principal:
        if not principal.has_scope(scope):
            raise Forbidden(
                f"this API key lacks the '{scope}' scope this route needs; create a key with "
                f"it (POST /v1/keys with an admin key, or 'slimforge admin create-key "
                f"--scopes {scope}')",
                details={
                    "required_scope": scope,
                    "key_scopes": [s for s in SCOPES if s in principal.scopes],
                },
            )
        return principal

    check.__name__ = f"require_{scope}_scope"
    return check


# One per route: the scope it needs (each includes the ones before it).
ReadPrincipalDep = Annotated[Principal, Depends(require_scope("read"))]
SubmitPrincipalDep = Annotated[Principal, Depends(require_scope("submit"))]
AdminPrincipalDep = Annotated[Principal, Depends(require_scope("admin"))]
