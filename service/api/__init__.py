"""HTTP only: the FastAPI app, one routes module per resource, request/response schemas, problem+json, auth.

Routes parse, make one call into ``tenants`` or ``fleet`` and map the result to a schema. The only package that
imports FastAPI or Starlette; may import everything below it. HTTP statuses for domain errors come from one table
in ``problems``.
"""
