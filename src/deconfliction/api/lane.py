"""The express lane: the busiest routes served without the framework's per-request machinery.

FastAPI declares every route (the OpenAPI document, ``/docs``, and the fallback for anything
unusual), and does per-request work these routes do not need: middleware layers, dependency
solving, a ``Request`` object, anyio's thread hop, telemetry hooks, all on the event loop that
every request of the process shares. The lane serves the routes that carry the load —
filing, updating, looking, querying, sending a hotline message — with the *same* endpoint
functions, request schemas, authentication and error answers, and nothing else:

1. match the method and path (FastAPI's ``{name}`` segments);
2. read the body under the size limit (413 ``too_large``);
3. hand anything the common path does not cover back to FastAPI untouched, body included: a
   content type other than JSON, an empty body, a body that is not JSON;
4. authenticate (401/403) and check the route's right, in FastAPI's order: after JSON decoding,
   before the schema;
5. validate the body with the route's pydantic model (422 ``invalid_request``, ``body.``-prefixed
   locations as FastAPI reports them);
6. call the endpoint on one of the lane's threads (:class:`Hands`) and send its answer.

tests/api/test_lane.py sends the same requests through the lane and through FastAPI alone and
requires the same status and body; every API test runs through the lane anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import queue
import re
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.responses import Response

from deconfliction.security import Principal

log = logging.getLogger("deconfliction.api")
T = TypeVar("T")

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
Respond = Callable[[Exception], Response]
"""An error, as the response the application gives for it."""

_JSON_TYPE = re.compile(rb"^application/([^;\s]+\+)?json\s*(;.*)?$", re.IGNORECASE)
_SEGMENT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class LaneRoute:
    method: str
    pattern: re.Pattern[str]
    endpoint: Callable[..., Any]
    right: str
    body: type[BaseModel] | None
    status: int
    answer: TypeAdapter[Any] | None
    """The declared response model: a result that is not a Response goes through it, as in
    FastAPI (defaults filled in, extra keys dropped)."""

    def render(self, result: Any) -> Response:
        if isinstance(result, Response):
            return result
        if self.answer is None:
            return Response(orjson.dumps(result), self.status, media_type=JSON)
        return Response(
            self.answer.dump_json(self.answer.validate_python(result)),
            self.status,
            media_type=JSON,
        )


class RequestTooLarge(Exception):
    """The body exceeds ``max_bytes`` (answered 413)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"The request body exceeds {max_bytes:,} bytes.")


class InvalidBody(Exception):
    """The body does not match the route's schema (answered 422, as FastAPI would)."""

    def __init__(self, error: ValidationError) -> None:
        super().__init__(str(error))
        self.errors = [{**err, "loc": ("body", *err["loc"])} for err in error.errors()]


class Hands:
    """Threads for blocking calls made from the event loop: a queue in, and the loop's own
    wake-up out. ``await hands.run(fn)`` costs about half the CPU of ``run_in_executor`` (whose
    futures each make a lock, a condition and a chain of callbacks): 55 against 110 µs a call
    on this two-core machine, measured under uvloop."""

    def __init__(self, threads: int, name: str) -> None:
        self.threads = threads
        self.name = name
        self._jobs: queue.SimpleQueue[
            tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[[], Any]] | None
        ] = queue.SimpleQueue()
        self._started = 0
        self._idle = 0
        self._generation = 0
        """Bumped by close(): threads of an earlier generation finish their job and leave."""
        self._lock = threading.Lock()

    async def run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        grow = False
        with self._lock:
            if self._idle:
                self._idle -= 1  # an idle thread will take this job
            elif self._started < self.threads:
                self._started += 1
                grow = True
        if grow:
            name = f"{self.name}-{self._started}"
            args = (self._generation,)
            threading.Thread(target=self._work, args=args, name=name, daemon=True).start()
        self._jobs.put((loop, future, fn))
        return await future

    def _work(self, generation: int) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            loop, future, fn = job
            try:
                result, error = fn(), None
            except BaseException as exc:  # handed to the awaiting coroutine, raised there
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # a loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(_settle, future, result, error)
            with self._lock:
                if generation != self._generation:
                    return  # closed meanwhile: this thread's None is for nobody else
                self._idle += 1

    def close(self) -> None:
        """Let the threads go once their jobs are done; a later call starts new ones."""
        with self._lock:
            for _ in range(self._idle):
                self._jobs.put(None)  # one for each thread waiting; busy ones see the generation
            self._started = self._idle = 0
            self._generation += 1


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class Lane:
    """Serves the routes added to it; passes every other request to ``app`` unchanged."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticate: Callable[[str | None], Principal],
        respond: Respond,
        max_bytes: int,
        threads: int,
    ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.respond = respond
        self.max_bytes = max_bytes
        self.hands = Hands(threads, "lane")
        self.routes: dict[str, list[LaneRoute]] = {}

    def add(
        self,
        method: str,
        path: str,
        endpoint: Callable[..., Any],
        *,
        right: str,
        body: type[BaseModel] | None = None,
        status: int = 200,
        answer: Any = None,
    ) -> None:
        """Serve ``method path`` by calling ``endpoint(who=..., body=..., <path params>)``."""
        parts = _SEGMENT.split(path)  # literal, name, literal, name, ..., literal
        regex = "".join(
            re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
        )
        adapter = TypeAdapter(answer) if answer is not None else None
        route = LaneRoute(method, re.compile(f"^{regex}$"), endpoint, right, body, status, adapter)
        self.routes.setdefault(method, []).append(route)

    def match(self, scope: Scope) -> tuple[LaneRoute, dict[str, str]] | None:
        if scope["type"] != "http":
            return None
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        for route in self.routes.get(scope["method"], ()):
            found = route.pattern.match(path)
            if found:
                return route, found.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        hit = self.match(scope)
        if hit is None:
            await self.app(scope, receive, send)
            return
        route, params = hit
        authorization = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization" and authorization is None:  # the first, as Starlette
                authorization = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value
            elif name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._send(send, self.respond(RequestTooLarge(self.max_bytes)))
                return
        body = b""
        if route.body is not None:
            try:
                body = await self._read(receive)
            except RequestTooLarge as exc:
                await self._send(send, self.respond(exc))
                return
            data = _json(body, content_type)
            if data is _NOT_JSON:
                await self.app(scope, _replay(body, receive), send)
                return
        try:
            who = self.authenticate(authorization)
            who.require(route.right)
            kwargs: dict[str, Any] = {"who": who, **params}
            if route.body is not None:
                try:
                    # from_attributes: as FastAPI validates a body (the same errors, word for word)
                    kwargs["body"] = route.body.model_validate(data, from_attributes=True)
                except ValidationError as exc:
                    raise InvalidBody(exc) from None
            result = await self.hands.run(partial(route.endpoint, **kwargs))
            result = route.render(result)
        except Exception as exc:
            result = self.respond(exc)
        await self._send(send, result)

    async def _read(self, receive: Any) -> bytes:
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)  # the client went away; what came is all there is
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                raise RequestTooLarge(self.max_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _send(send: Any, response: Response) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    def close(self) -> None:
        """Let the threads go (at the application's shutdown); a later request makes new ones."""
        self.hands.close()


JSON = "application/json"
_NOT_JSON = object()


def _json(body: bytes, content_type: bytes | None) -> Any:
    """The body as FastAPI would decode it, or ``_NOT_JSON`` where FastAPI must decide."""
    if not body or content_type is None or not _JSON_TYPE.match(content_type):
        return _NOT_JSON
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # FastAPI has its answers for these (422 or 400)
        return _NOT_JSON


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that gives the body already read, then hands over to the real one."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Any:
        if pending:
            return pending.pop()
        return await receive()

    return replay


class ServiceAPI(FastAPI):
    """FastAPI with the express lane in front (api/lane.py): the routes handed to
    :meth:`express` are served by the lane, everything else by FastAPI as usual."""

    lane: Lane

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        await self.lane(scope, receive, send)

    def express(self, endpoint: Callable[..., Any], right: str) -> None:
        """Serve the route declared with ``endpoint`` through the lane; its method, path,
        status and body schema are the declared route's."""
        route = next(r for r in self.routes if isinstance(r, APIRoute) and r.endpoint is endpoint)
        body = inspect.signature(endpoint).parameters.get("body")
        for method in route.methods:
            self.lane.add(
                method,
                route.path,
                endpoint,
                right=right,
                body=body.annotation if body is not None else None,
                status=route.status_code or 200,
                answer=route.response_model,
            )
