"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status.

Handlers raise :class:`ApiError`; the app turns it (and FastAPI's validation errors) into that body,
so every 4xx/5xx a client sees parses with the official ``openai`` client's error classes.
"""

from __future__ import annotations

from typing import Any

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


class ApiError(Exception):
    """An HTTP error the client should see, with OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ERROR_TYPES.get(
            status, "invalid_request_error" if status < 500 else "server_error"
        )
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """One readable line from pydantic/FastAPI validation errors, and the first offending field."""
    parts, first = [], None
    for err in errors:
        if err.get("type") == "json_invalid":
            loc = err.get("loc", ())
            pos = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
            return (
                f"request body is not valid JSON ({(err.get('ctx') or {}).get('error', 'decode error')}{pos})",
                None,
            )
    for err in errors[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        field = _dotted(loc)
        if not field and err.get("type") in ("model_attributes_type", "dict_type"):
            parts.append("request body must be a JSON object")
            continue
        first = first or field or None
        parts.append(f"{field or 'body'}: {err.get('msg', 'invalid')}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more, first


def _dotted(loc: list[str]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if p.isdigit() else ("." if out else "") + p
    return out
