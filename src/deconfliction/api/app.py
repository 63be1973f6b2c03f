"""The ASGI application: routes under /v1, errors as ``{"code", "message", "details"}``.

Every status is decided here from the core's error classes; a route only translates HTTP to a
service call and back.
"""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from enum import Enum
from functools import partial
from typing import Annotated, Any

import anyio
import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.exceptions import HTTPException as StarletteHTTPException

from deconfliction import __version__
from deconfliction.api import hotline as hotline_routes
from deconfliction.api import schemas as s
from deconfliction.api import tactical as tactical_routes
from deconfliction.api.lane import InvalidBody, Lane, RequestTooLarge, ServiceAPI
from deconfliction.config import Settings
from deconfliction.core import errors as e
from deconfliction.core.model import OperationDetails
from deconfliction.core.rules import Found
from deconfliction.formats import parse_volumes
from deconfliction.geo import Volume
from deconfliction.runtime import Runtime
from deconfliction.security import ADMIN, READ, WRITE, Principal
from deconfliction.services.strategic import Filing
from deconfliction.services.views import (
    event_view,
    found_view,
    operation_view,
    subscription_view,
    view_for,
)

log = logging.getLogger("deconfliction.api")

STATUS: list[tuple[type[e.DeconflictionError], int]] = [
    (e.LimitExceeded, 400),
    (e.InvalidInput, 400),
    (e.Unauthenticated, 401),
    (e.Forbidden, 403),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.Unavailable, 503),
]

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": s.ErrorOut} for status in (400, 401, 403, 404, 409, 413, 422, 503)
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Found):
        return found_view(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def fast_json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Serialise a view straight to JSON: the views are already the documented shape, so the
    response model's second validation pass would only cost time on the hottest routes."""
    return Response(
        orjson.dumps(data), status_code=status, headers=headers, media_type="application/json"
    )


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response:
    """The error body every face answers with, serialised like the views (:func:`fast_json`): a
    refusal for a missing key lists every operation missed with its volumes, and in a hot spot
    such refusals are most of the answers."""
    body = {"code": code, "message": message, "details": _jsonable(details)}
    return fast_json(body, status, headers)


def schema_error_response(errors: Sequence[Any]) -> Response:
    """422 for a request that does not match its schema (pydantic's errors, located)."""
    problems = [
        {"where": ".".join(str(p) for p in err.get("loc", ())), "problem": err.get("msg")}
        for err in errors
    ]
    first = problems[0] if problems else {"where": "body", "problem": "invalid"}
    return error_response(
        422,
        "invalid_request",
        f"The request does not match the schema: {first['where']}: {first['problem']}.",
        problems,
    )


def error_for(exc: Exception) -> Response:
    """The answer to an error, whichever path (FastAPI's handlers or the lane) met it."""
    if isinstance(exc, e.DeconflictionError):
        status = next((code for cls, code in STATUS if isinstance(exc, cls)), 400)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if status == 503:
            headers = {"Retry-After": "1"}
        return error_response(status, exc.code, exc.message, exc.details, headers)
    if isinstance(exc, InvalidBody):
        return schema_error_response(exc.errors)
    if isinstance(exc, RequestTooLarge):
        return error_response(413, "too_large", str(exc))
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal_error", "The service failed unexpectedly.")


class BodyLimit:
    """Refuses request bodies over the limit with 413, whether or not Content-Length is sent.

    ``exempt`` paths are long-lived streams that bound each line themselves.
    """

    def __init__(
        self, app: Callable[..., Awaitable[None]], max_bytes: int, exempt: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                too_large = error_for(RequestTooLarge(self.max_bytes))
                await too_large(scope, receive, send)
                return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI lets its own HTTPException through body parsing untouched.
                    raise HTTPException(413, str(RequestTooLarge(self.max_bytes)))
            return message

        await self.app(scope, limited, send)


def create_app(runtime: Runtime | None = None, *, background: bool = False) -> ServiceAPI:
    """The application; with ``background`` it also runs this process's periodic duties
    (webhook delivery, escalation, liveness, audit seals) while it serves."""
    runtime = runtime or Runtime.open()
    strategic = runtime.strategic
    limits = strategic.policy.limits

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Blocking routes run on a thread pool whose size is a setting: more threads serve more
        # streams and slow stores at once, fewer fight less over the GIL (measured: no clear
        # winner on two cores, so the default stays anyio's 40).
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = runtime.settings.http_threads
        duties = runtime.duties() if background else None
        if duties:
            duties.start()
        try:
            yield
        finally:
            app.lane.close()
            if duties:
                duties.stop()

    app = ServiceAPI(
        lifespan=lifespan,
        title="deconfliction",
        version=__version__,
        summary="Strategic deconfliction between parties who share airspace.",
        description=(
            "Parties file 4D operations; the service finds every conflict with other parties' "
            "operations exactly, requires proof of awareness (a key of versions, as in ASTM "
            "F3548-21), applies priorities and tells every affected party. Authenticate with a "
            "bearer JWT (`deconfliction party add NAME` issues one). Errors are JSON objects "
            "with `code`, `message` and `details`."
        ),
    )
    app.state.runtime = runtime
    bearer = HTTPBearer(auto_error=False)

    @app.exception_handler(e.DeconflictionError)
    async def domain_error(_: Request, exc: e.DeconflictionError) -> Response:
        return error_for(exc)

    @app.exception_handler(RequestValidationError)
    async def schema_error(_: Request, exc: RequestValidationError) -> Response:
        return schema_error_response(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI answers 400 when it cannot read a body as JSON at all (bad UTF-8, an integer
        # of more than 4,300 digits, nesting deeper than the parser recurses).
        code = {
            400: "invalid_json",
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
        }.get(exc.status_code, "http_error")
        return error_response(
            exc.status_code, code, str(exc.detail), None, getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:
        return error_for(exc)

    registered: set[str] = set()  # parties are never removed, so a party seen once stays known

    def authenticate(authorization: str | None) -> Principal:
        """The caller behind an ``Authorization`` header (parsed as FastAPI's HTTPBearer)."""
        scheme, token = get_authorization_scheme_param(authorization)
        if scheme.lower() != "bearer" or not token:
            raise e.Unauthenticated("A bearer token is required.", code="missing_token")
        who = runtime.tokens.verify(token)
        if who.party_id not in registered:
            # A trusted issuer can sign any `sub`: only a registered party may act here.
            try:
                strategic.get_party(who.party_id)
            except e.NotFound:
                raise e.Forbidden(
                    f"The token's party {who.party_id!r} is not registered with this service.",
                    code="unregistered_party",
                ) from None
            registered.add(who.party_id)
        return who

    async def principal(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        if credentials is None:
            raise e.Unauthenticated("A bearer token is required.", code="missing_token")
        return authenticate(f"{credentials.scheme} {credentials.credentials}")

    async def reader(who: Annotated[Principal, Depends(principal)]) -> Principal:
        who.require(READ)
        return who

    async def writer(who: Annotated[Principal, Depends(principal)]) -> Principal:
        who.require(WRITE)
        return who

    async def admin(who: Annotated[Principal, Depends(principal)]) -> Principal:
        who.require(ADMIN)
        return who

    Reader = Annotated[Principal, Depends(reader)]
    Writer = Annotated[Principal, Depends(writer)]
    Admin = Annotated[Principal, Depends(admin)]

    def volumes_of(body: s.Volumes) -> list[Volume]:
        if isinstance(body, s.FeatureCollection):
            raw: Any = body.model_dump(mode="json", exclude_none=True)
        else:
            raw = [v.model_dump(mode="json", exclude_none=True) for v in body]
        return parse_volumes(raw)

    def filing(body: s.OperationIn | s.OperationUpdate) -> Filing:
        """The request as a filing; on an update, an omitted priority or details stays as is."""
        details = OperationDetails.from_json(body.details.model_dump()) if body.details else None
        if details is None and isinstance(body, s.OperationIn):
            details = OperationDetails()
        return Filing(volumes_of(body.volumes), body.state, body.priority, tuple(body.key), details)

    def filed(result: Any, status: int = 200) -> Response:
        return fast_json(
            {
                "operation": operation_view(result.operation, owner_view=True),
                "conflicts": [found_view(f) for f in result.conflicts],
                "late_notice_to": result.late_notice_to,
                "unreachable": result.unreachable,
            },
            status,
        )

    @app.get("/v1/health", tags=["service"])
    def health() -> dict[str, str]:
        """Liveness; needs no token."""
        return {"status": "ok", "version": __version__}

    @app.get("/v1/me", response_model=s.PartyOut, responses=ERRORS, tags=["parties"])
    def me(who: Reader) -> dict[str, Any]:
        party = strategic.get_party(who.party_id)
        return {"id": party.id, "name": party.name}

    @app.get("/v1/parties", response_model=s.PartiesOut, responses=ERRORS, tags=["parties"])
    def parties(who: Reader) -> dict[str, Any]:
        return {"parties": [{"id": p.id, "name": p.name} for p in strategic.list_parties()]}

    @app.post(
        "/v1/parties",
        status_code=201,
        response_model=s.NewPartyOut,
        responses=ERRORS,
        tags=["parties"],
    )
    def add_party(body: s.PartyIn, who: Admin) -> dict[str, Any]:
        """Register a party and issue its token (admin scope)."""
        party = strategic.add_party(body.name)
        return {
            "party": {"id": party.id, "name": party.name},
            "token": runtime.tokens.issue(party.id),
        }

    @app.post(
        "/v1/operations",
        status_code=201,
        response_model=s.FiledOut,
        responses=ERRORS,
        tags=["operations"],
    )
    def file_operation(body: s.OperationIn, who: Writer) -> Response:
        """File an operation. 409 `missing_key` lists the conflicting operations you must see."""
        return filed(strategic.file_operation(who.party_id, filing(body)), 201)

    @app.get(
        "/v1/operations", response_model=s.OperationsOut, responses=ERRORS, tags=["operations"]
    )
    def my_operations(
        who: Reader,
        include_ended: bool = False,
        limit: Annotated[int, Query(ge=1, le=limits.max_page_size)] = 100,
    ) -> dict[str, Any]:
        """Your own operations, oldest first."""
        ops = strategic.list_operations(who.party_id, include_ended=include_ended, limit=limit)
        return {"operations": [operation_view(op, owner_view=True) for op in ops]}

    @app.get(
        "/v1/operations/{operation_id}",
        response_model=s.OperationOut,
        responses=ERRORS,
        tags=["operations"],
    )
    def get_operation(operation_id: str, who: Reader) -> dict[str, Any]:
        """Any party may read an operation's reference; details go to the owner only."""
        op = strategic.get_operation(operation_id)
        return view_for(op, who.party_id)

    @app.put(
        "/v1/operations/{operation_id}",
        response_model=s.FiledOut,
        responses=ERRORS,
        tags=["operations"],
    )
    def update_operation(operation_id: str, body: s.OperationUpdate, who: Writer) -> dict[str, Any]:
        """Replace volumes, state, priority and details; `version` must be the current one."""
        result = strategic.update_operation(who.party_id, operation_id, body.version, filing(body))
        return filed(result)

    @app.delete(
        "/v1/operations/{operation_id}",
        response_model=s.OperationOut,
        responses=ERRORS,
        tags=["operations"],
    )
    def end_operation(operation_id: str, version: str, who: Writer) -> dict[str, Any]:
        """End an operation (kept for the record, no longer matched)."""
        op = strategic.end_operation(who.party_id, operation_id, version)
        return operation_view(op, owner_view=True)

    @app.post(
        "/v1/operations/query",
        response_model=s.OperationsOut,
        responses=ERRORS,
        tags=["operations"],
    )
    def query_operations(body: s.AreaIn, who: Reader) -> dict[str, Any]:
        """Every live operation intersecting a 4D area (references; details for your own)."""
        ops = strategic.query_operations(volumes_of(body.volumes))
        return {"operations": [view_for(op, who.party_id) for op in ops]}

    @app.post(
        "/v1/operations/conflicts",
        response_model=s.ConflictsOut,
        responses=ERRORS,
        tags=["operations"],
    )
    def conflicts(body: s.AreaIn, who: Reader) -> dict[str, Any]:
        """Dry run: the other parties' operations these volumes would conflict with."""
        found = strategic.conflicts_for(who.party_id, volumes_of(body.volumes))
        return {"conflicts": [found_view(f) for f in found]}

    @app.post(
        "/v1/subscriptions",
        status_code=201,
        response_model=s.SubscriptionOut,
        responses=ERRORS,
        tags=["subscriptions"],
    )
    def subscribe(body: s.AreaIn, who: Reader) -> dict[str, Any]:
        """Every change to an operation intersecting the area becomes an event for you."""
        return subscription_view(strategic.subscribe(who.party_id, volumes_of(body.volumes)))

    @app.get(
        "/v1/subscriptions",
        response_model=s.SubscriptionsOut,
        responses=ERRORS,
        tags=["subscriptions"],
    )
    def subscriptions(who: Reader) -> dict[str, Any]:
        return {
            "subscriptions": [
                subscription_view(x) for x in strategic.list_subscriptions(who.party_id)
            ]
        }

    @app.get(
        "/v1/subscriptions/{subscription_id}",
        response_model=s.SubscriptionOut,
        responses=ERRORS,
        tags=["subscriptions"],
    )
    def get_subscription(subscription_id: str, who: Reader) -> dict[str, Any]:
        return subscription_view(strategic.get_subscription(who.party_id, subscription_id))

    @app.delete(
        "/v1/subscriptions/{subscription_id}",
        response_model=s.SubscriptionOut,
        responses=ERRORS,
        tags=["subscriptions"],
    )
    def unsubscribe(subscription_id: str, version: str, who: Reader) -> dict[str, Any]:
        return subscription_view(strategic.unsubscribe(who.party_id, subscription_id, version))

    @app.get("/v1/events", response_model=s.EventsOut, responses=ERRORS, tags=["events"])
    def events(
        who: Reader,
        after: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=limits.max_page_size)] = 100,
    ) -> dict[str, Any]:
        """Your event feed, oldest first; page with `after`."""
        found = strategic.events(who.party_id, after, limit)
        return {
            "events": [event_view(x) for x in found],
            "next_after": found[-1].id if found else after,
        }

    # The routes that carry the load (filing, looking, querying) take the lane.
    app.lane = Lane(
        partial(FastAPI.__call__, app),
        authenticate=authenticate,
        respond=error_for,
        max_bytes=limits.max_request_bytes,
        threads=runtime.settings.http_threads,
    )
    for endpoint, right in (
        (file_operation, WRITE),
        (update_operation, WRITE),
        (get_operation, READ),
        (query_operations, READ),
        (conflicts, READ),
    ):
        app.express(endpoint, right)
    hotline_routes.add_routes(app, runtime, Reader, Writer, Admin, ERRORS)
    tactical_routes.add_routes(app, runtime, Reader, Writer, Admin, ERRORS)
    app.add_middleware(
        BodyLimit, max_bytes=limits.max_request_bytes, exempt=(tactical_routes.STREAM_PATH,)
    )
    return app


def app_from_env() -> ServiceAPI:
    """Factory for ``uvicorn --factory`` and worker processes: settings from the environment."""
    return create_app(Runtime.open_patiently(Settings()), background=True)
