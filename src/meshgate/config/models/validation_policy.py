"""``meshgate.dev/v1alpha1`` ValidationPolicy: requests checked against an OpenAPI 3.0 /
3.1 document (path, query, header and cookie parameters, JSON bodies) or a plain JSON
Schema for the body, before they go upstream. A request that fails is answered 400
(``application/problem+json``, each failing field named) and never forwarded.

The document itself is compiled when the config is (``filters/validation``): a schema
or ``$ref`` that does not work is a config error, with the document's JSON pointer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from meshgate.config.models.meta import FieldError, ObjectName, ResourceBase, Strict
from meshgate.config.models.policy_common import Section, TargetedSpec

DEFAULT_MAX_BODY = 1024 * 1024


class ConfigMapKeyRef(Strict):
    name: ObjectName = Field(
        description="ConfigMap in the policy's namespace (or another, with a ReferenceGrant)."
    )
    namespace: str | None = Field(
        default=None, description="Namespace of the ConfigMap; the policy's if unset."
    )
    key: str = Field(
        default="openapi.yaml",
        min_length=1,
        description="Key that holds the document (YAML or JSON).",
    )


class OpenAPISource(Section):
    """Where the OpenAPI document is, and how requests that it does not describe are treated."""

    inline: dict[str, Any] | str | None = Field(
        default=None,
        description="The document itself: a mapping, or its YAML / JSON text.",
    )
    configMapRef: ConfigMapKeyRef | None = Field(
        default=None,
        description="A ConfigMap key holding the document's YAML or JSON text.",
    )
    basePath: str = Field(
        default="",
        description="Prefix of the request path before the document's paths (the path part "
        "of its `servers` URL, `/v1` say); a request outside it is an unknown operation.",
    )
    rejectUnknownOperations: bool = Field(
        default=True,
        description="Refuse requests whose path and method match no operation of the document "
        "(with `unknownOperationStatus`). false: they pass through unchecked.",
    )
    unknownOperationStatus: Literal[400, 404] = Field(
        default=400,
        description="Status for an unknown operation: 400 as Kong's oas-validation and APISIX's "
        "oas-validator answer; 404 hides what the API does not have. A known path with an "
        "undescribed method is always 405 with `Allow`.",
    )

    @model_validator(mode="after")
    def _one(self) -> OpenAPISource:
        if (self.inline is None) == (self.configMapRef is None):
            raise FieldError((), "exactly one of inline or configMapRef must be set")
        if self.basePath and (
            not self.basePath.startswith("/") or self.basePath.endswith("/")
        ):
            raise FieldError(
                ("basePath",), "must start with / and not end with / (e.g. /v1)"
            )
        return self


class JSONSchemaBody(Section):
    """A JSON Schema for the body of every request on the targets."""

    schema_: dict[str, Any] | bool = Field(
        alias="schema",
        description="The schema (draft 2020-12 unless its `$schema` names another draft).",
    )
    methods: list[Literal["POST", "PUT", "PATCH", "DELETE", "GET", "OPTIONS"]] = Field(
        default_factory=lambda: ["POST", "PUT", "PATCH"],
        min_length=1,
        description="Methods whose bodies are validated; other requests pass unchecked.",
    )
    required: bool = Field(
        default=True, description="Refuse an empty body (400) for these methods."
    )


class ValidationPolicySpec(TargetedSpec):
    """Targets and what requests are checked against."""

    openapi: OpenAPISource | None = Field(
        default=None, description="An OpenAPI 3.0 / 3.1 document."
    )
    jsonSchema: JSONSchemaBody | None = Field(
        default=None, description="A JSON Schema for request bodies."
    )
    maxBodyBytes: int = Field(
        default=DEFAULT_MAX_BODY,
        ge=1,
        le=64 * 1024 * 1024,
        description="Largest request body read for validation, in bytes; a larger one gets 413.",
    )
    maxErrors: int = Field(
        default=10,
        ge=1,
        le=100,
        description="Most failing fields listed in one 400 answer.",
    )

    @model_validator(mode="after")
    def _one(self) -> ValidationPolicySpec:
        if (self.openapi is None) == (self.jsonSchema is None):
            raise FieldError((), "exactly one of openapi or jsonSchema must be set")
        return self


class ValidationPolicy(ResourceBase):
    """Requests validated against an OpenAPI document or a JSON Schema."""

    apiVersion: Literal["meshgate.dev/v1alpha1"] = Field(
        description="Always `meshgate.dev/v1alpha1`."
    )
    kind: Literal["ValidationPolicy"] = Field(description="Always `ValidationPolicy`.")
    spec: ValidationPolicySpec = Field(description="Targets and the API description.")
