"""Each route's contract, declared beside it in app.py and read by `contract.openapi`.

`@operation(...)` only attaches an `Operation` to the view function: models are named by
dotted path ("chalicelib.users.schemas:Signup") and imported when the document is built,
so `import app` (every cold start) never imports pydantic. The route itself (path, method,
authorizer) stays Chalice's: the document reads those from `app.routes`, one source.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

View = TypeVar("View", bound=Callable[..., Any])
#: Who may call: nobody signed in; any user; the resource's owner or admins; admins only;
#: users or a trusted producer's machine token.
Audience = Literal["public", "user", "owner", "admin", "machine"]
#: An operation's contract is kept on its view function under this attribute.
ATTRIBUTE = "__contract__"


@dataclass(frozen=True)
class Operation:
    summary: str
    responses: Mapping[int, str | None]
    request: str | None = None
    auth: Audience = "user"
    #: (default, maximum) of `limit`, with `cursor`; None: not paginated.
    page: tuple[int, int] | None = None
    query: tuple[str, ...] = ()
    #: Error statuses beyond those the generator derives (auth, body, path, paging, 503).
    errors: tuple[int, ...] = ()
    headers: tuple[str, ...] = ()
    #: operationIds a success response links to (its body's fields fill their path params).
    links: tuple[str, ...] = ()
    #: False for views that call no AWS service (no 503).
    aws: bool = True


def operation(
    summary: str,
    *,
    responses: Mapping[int, str | None],
    request: str | None = None,
    auth: Audience = "user",
    paginated: bool | tuple[int, int] = False,
    query: tuple[str, ...] = (),
    errors: tuple[int, ...] = (),
    headers: tuple[str, ...] = (),
    links: tuple[str, ...] = (),
    aws: bool = True,
) -> Callable[[View], View]:
    """Attach the route's contract to its view; nothing else happens at import."""
    page = (20, 100) if paginated is True else (paginated or None)
    contract = Operation(
        summary, dict(responses), request, auth, page, query, errors, headers, links, aws
    )

    def attach(view: View) -> View:
        setattr(view, ATTRIBUTE, contract)
        return view

    return attach


def contract_of(view: Callable[..., Any]) -> Operation | None:
    return getattr(view, ATTRIBUTE, None)
