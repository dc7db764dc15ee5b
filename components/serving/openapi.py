"""The OpenAPI document the server publishes at ``/openapi.json`` (behind the same bearer token as every route).

The generation routes read and check their bodies themselves (counted as they arrive, errors as OpenAI's
error object), so FastAPI sees no body parameter; the document gets each route's request body from the
pydantic model that checks it, with the models' definitions under ``components.schemas``. Clients and
API fuzzers (schemathesis) generate requests from it.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

REF = "#/components/schemas/{model}"


def openapi_document(api: Any, bodies: dict[str, type[BaseModel]]) -> dict:
    """``api``'s OpenAPI document with ``bodies`` (path -> request model) as the POST routes' JSON bodies."""
    if api.openapi_schema is not None:
        return api.openapi_schema
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=api.title, version=api.version, routes=api.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for path, model in bodies.items():
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        doc["paths"][path]["post"]["requestBody"] = {
            "required": True, "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}}
    api.openapi_schema = doc
    return doc
