"""No client mistake ever gives a 500: arbitrary JSON bodies, paths and query strings."""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    ["email", "name", "phone", "bio", "preferences", "password", "user_id", "x"]
)
USER_BODIES = st.dictionaries(FIELDS, JSON_VALUES, max_size=6) | JSON_VALUES
QUERY_TEXT = st.text(alphabet=string.ascii_letters + string.digits + "-_=%+/.", max_size=40)
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(body=USER_BODIES)
def test_register_never_fails_on_the_server(client: Any, body: Any) -> None:
    response = client.http.post(
        "/register", headers={"Content-Type": "application/json"}, body=json.dumps(body)
    )
    assert response.status_code in (202, 400), response.body


@FUZZ
@given(body=USER_BODIES, user_id=st.text(alphabet=string.printable, max_size=60))
def test_update_never_fails_on_the_server(api: Any, body: Any, user_id: str) -> None:
    response = api.put(f"/users/{user_id.replace('/', '')}", json.dumps(body))
    assert 400 <= response.status_code < 500, response.body


@FUZZ
@given(body=USER_BODIES)
def test_update_of_a_real_user_never_fails_on_the_server(
    api: Any, admin: tuple[dict[str, Any], str], body: Any
) -> None:
    response = api.put(f"/users/{admin[0]['user_id']}", json.dumps(body))
    # 429: the codes mailed to one new address in a day are bounded.
    assert response.status_code in (200, 400, 409, 429), response.body


@FUZZ
@given(limit=QUERY_TEXT, cursor=QUERY_TEXT)
def test_list_never_fails_on_the_server(api: Any, limit: str, cursor: str) -> None:
    response = api.get(f"/users?limit={limit}&cursor={cursor}")
    assert response.status_code in (200, 400), response.body


@FUZZ
@given(token=st.text(max_size=300))
def test_any_authorization_header_is_401_never_500(client: Any, token: str) -> None:
    from tests.unit.api_helpers import ApiClient

    header = token.encode("latin-1", "replace").decode("latin-1")
    response = ApiClient(client).get("/users", headers={"Authorization": header or "x"})
    assert response.status_code == 401, response.body


@FUZZ
@given(raw=st.binary(max_size=200))
def test_raw_bytes_never_fail_on_the_server(client: Any, raw: bytes) -> None:
    response = client.http.post("/register", headers={"Content-Type": "application/json"}, body=raw)
    assert response.status_code in (202, 400), response.body
