"""The public HTTP API (Starlette + orjson) over the back office components."""

from reference_impl.http.app import create_app

__all__ = ["create_app"]
