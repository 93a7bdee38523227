"""Makes one OpenAPI document of the fragments the services provide.

Each service describes its own routes and payloads in its `openapi.py`, as a `Fragment`. This
module holds what they describe them with (errors, auth, parameters, the probes every service
answers, see web.py) and `assemble`. It imports no service: services/devtools/openapi.py gathers
the fragments, writes the document history serves, and tests/unit/test_openapi.py compares each
fragment with its service's router.
"""

from dataclasses import dataclass

from pydantic import BaseModel

from .limits import MAX_IDS_PER_PRESENCE_QUERY, MAX_USER_ID_LENGTH
from .params import PageSize

ERROR = {"$ref": "#/components/schemas/Error"}
USER_AUTH = [{"bearer": []}, {"cookie": []}]
INTERNAL_AUTH = [{"internalToken": []}]
USER_ID = {"type": "string", "minLength": 1, "maxLength": MAX_USER_ID_LENGTH}

ERROR_MEANINGS = {
    400: "Bad input; `code` names the field (`invalid_<field>`)",
    401: "No or bad token",
    403: "Not yours",
    404: "Unknown",
    409: "Conflict",
    429: "Rate limited (`Retry-After`)",
    503: "A backing store or service is down",
}


def schema_ref(model: type[BaseModel]) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def json_answer(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_answers(*statuses: int) -> dict:
    return {str(status): json_answer(ERROR, ERROR_MEANINGS[status]) for status in statuses}


def param(name: str, where: str, description: str, schema: dict | None = None, required: bool = False) -> dict:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


def limit_param(size: PageSize) -> dict:
    return param("limit", "query", f"Page size (default {size.default})",
                 {"type": "integer", "minimum": 1, "maximum": size.most})


def public_operation(summary: str, responses: dict, parameters: list | None = None,
                     statuses=(400, 401, 429, 503)) -> dict:
    """A route a user calls with their token, through a gateway."""
    return {"summary": summary, "security": USER_AUTH, "parameters": parameters or [],
            "responses": {**responses, **error_answers(*statuses)}}


def internal_operation(summary: str, responses: dict, body: type[BaseModel] | dict | None = None,
                       parameters: list | None = None) -> dict:
    """A route another service calls with its `X-Internal-Token`, on the internal listener."""
    operation = {"summary": summary, "security": INTERNAL_AUTH, "parameters": parameters or [],
                 "responses": {**responses, **error_answers(400, 401, 404, 503)}}
    if body is not None:
        schema = schema_ref(body) if isinstance(body, type) else body
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    return operation


# Presence questions, asked of presence by a gateway and of a gateway by a user.
USER_IDS_QUERY = param("ids", "query", f"Comma-separated user ids (at most {MAX_IDS_PER_PRESENCE_QUERY})",
                       required=True)
ONLINE = json_answer({"type": "object", "properties": {"online": {"type": "array", "items": USER_ID}}})

PROBE = {"type": "object", "properties": {"status": {"type": "string"}}}
METRICS_TEXT = {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}


def healthz_path(service: str) -> dict:
    return {"/healthz": {"get": {"summary": f"{service}: the process is alive", "responses": {"200": json_answer(PROBE)}}}}


def internal_probe_paths(service: str) -> dict:
    return {
        **healthz_path(service),
        "/readyz": {"get": {"summary": f"{service}: every dependency answers",
                            "responses": {"200": json_answer(PROBE),
                                          "503": json_answer(PROBE, "A dependency is down, or draining")}}},
        "/metrics": {"get": {"summary": f"{service}: Prometheus metrics", "responses": {"200": METRICS_TEXT}}},
    }


@dataclass(frozen=True)
class Fragment:
    """One service's part of the document: the routes of its two listeners and the models they use.

    `forwarded` lists the (method, route) pairs the service's public listener passes on to
    another service, whose fragment documents them. The probes of web.py are added here.
    """

    service: str
    public: dict
    internal: dict
    models: tuple[type[BaseModel], ...] = ()
    forwarded: tuple[tuple[str, str], ...] = ()

    def public_paths(self) -> dict:
        return {**self.public, **healthz_path(self.service)}

    def internal_paths(self) -> dict:
        return {**self.internal, **internal_probe_paths(self.service)}


def assemble(fragments: list[Fragment]) -> dict:
    paths: dict[str, dict] = {}
    for fragment in fragments:
        for service_paths in (fragment.public_paths(), fragment.internal_paths()):
            for path, item in service_paths.items():
                paths.setdefault(path, {}).update(item)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Parley",
            "version": "1",
            "description": "Public routes are served through any gateway node; `/internal/*`, `/readyz` and "
            "`/metrics` only on each service's internal listener (INTERNAL_PORT), `/internal/*` with the "
            "calling service's `X-Internal-Token`. Errors are always `{message, code}`.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas([model for fragment in fragments for model in fragment.models]),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "token"},
                "internalToken": {"type": "apiKey", "in": "header", "name": "X-Internal-Token"},
                # A media download link: `signature` (with `expires`, `variant`) signs the link itself.
                "signedLink": {"type": "apiKey", "in": "query", "name": "signature"},
            },
        },
    }


def _schemas(models: list[type[BaseModel]]) -> dict:
    schemas = {
        "Error": {"type": "object", "required": ["message", "code"],
                  "properties": {"message": {"type": "string"}, "code": {"type": "string"}}},
    }
    for model in models:
        schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas
