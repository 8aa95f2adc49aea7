"""Deployments of the back office: monolith (one process), microservices and hybrid
(supervised processes, HTTP between components, events through a broker)."""

from reference_impl.deployments.monolith import ServeConfig, monolith_app, serve_monolith

__all__ = ["ServeConfig", "monolith_app", "serve_monolith"]
