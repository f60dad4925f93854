"""serverless-app: every entry point, each a few lines handing off to chalicelib."""

from chalice import Chalice, Response

from chalicelib.core import http
from chalicelib.users import users_service
from chalicelib.users.pagination import parse_limit

app = Chalice(app_name="serverless-app")
http.install(app)


@app.route("/health", methods=["GET"])
def health() -> dict:
    """Liveness for load balancers and monitors: answers without calling AWS."""
    return http.health()


# --- Users API --------------------------------------------------------------------------


@app.route("/register", methods=["POST"])
def register() -> Response:
    user = users_service().register(http.json_object(app.current_request))
    return Response(body=user, status_code=201, headers={"Location": f"/users/{user['user_id']}"})


@app.route("/users", methods=["GET"])
def list_users() -> dict:
    params = app.current_request.query_params or {}
    return users_service().list(parse_limit(params.get("limit")), params.get("cursor"))


@app.route("/users/{user_id}", methods=["GET"])
def get_user(user_id: str) -> dict:
    return users_service().get(user_id)


@app.route("/users/{user_id}", methods=["PUT"])
def update_user(user_id: str) -> dict:
    return users_service().update(user_id, http.json_object(app.current_request))


@app.route("/users/{user_id}", methods=["DELETE"])
def delete_user(user_id: str) -> Response:
    users_service().delete(user_id)
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
