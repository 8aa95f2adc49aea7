"""Deployments of the back office: monolith (here), microservices and hybrid (to come)."""

from reference_impl.deployments.monolith import ServeConfig, monolith_app, serve_monolith

__all__ = ["ServeConfig", "monolith_app", "serve_monolith"]
