"""serverless-app: every entry point, each a few lines handing off to chalicelib."""

from chalice import Chalice, Response
from chalice.app import AuthRequest, AuthResponse

from chalicelib.auth.authorizer import AUTHORIZER_CACHE_SECONDS, authorize, principal_of
from chalicelib.core import http
from chalicelib.users import users_service
from chalicelib.users.pagination import parse_limit

app = Chalice(app_name="serverless-app")
http.install(app)


@app.authorizer(ttl_seconds=AUTHORIZER_CACHE_SECONDS)
def cognito_jwt(auth_request: AuthRequest) -> AuthResponse:
    """Verifies Cognito ID and access tokens (RS256, the pool's JWKS)."""
    return authorize(auth_request)


@app.route("/health", methods=["GET"])
def health() -> dict:
    """Liveness for load balancers and monitors: answers without calling AWS."""
    return http.health()


# --- Users API --------------------------------------------------------------------------


@app.route("/register", methods=["POST"])
def register() -> Response:
    user = users_service().register(http.json_object(app.current_request))
    return Response(body=user, status_code=201, headers={"Location": f"/users/{user['user_id']}"})


@app.route("/users", methods=["GET"], authorizer=cognito_jwt)
def list_users() -> dict:
    params = app.current_request.query_params or {}
    caller = principal_of(app.current_request)
    return users_service().list(caller, parse_limit(params.get("limit")), params.get("cursor"))


@app.route("/users/{user_id}", methods=["GET"], authorizer=cognito_jwt)
def get_user(user_id: str) -> dict:
    return users_service().get(principal_of(app.current_request), user_id)


@app.route("/users/{user_id}", methods=["PUT"], authorizer=cognito_jwt)
def update_user(user_id: str) -> dict:
    body = http.json_object(app.current_request)
    return users_service().update(principal_of(app.current_request), user_id, body)


@app.route("/users/{user_id}", methods=["DELETE"], authorizer=cognito_jwt)
def delete_user(user_id: str) -> Response:
    users_service().delete(principal_of(app.current_request), user_id)
    return Response(body="", status_code=204)


# --- CORS preflight (origins per stage: CORS_ALLOW_ORIGINS) -------------------------------


@app.route("/register", methods=["OPTIONS"])
def register_preflight() -> Response:
    return http.preflight(app.current_request, "POST,OPTIONS")


@app.route("/users", methods=["OPTIONS"])
def users_preflight() -> Response:
    return http.preflight(app.current_request, "GET,OPTIONS")


@app.route("/users/{user_id}", methods=["OPTIONS"])
def user_preflight(user_id: str) -> Response:
    return http.preflight(app.current_request, "GET,PUT,DELETE,OPTIONS")
