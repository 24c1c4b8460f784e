"""SecurityPolicy ``basicAuth`` section (gateway.envoyproxy.io/v1alpha1): users from an
htpasswd Secret (basic_auth_types.go). meshgate accepts bcrypt entries besides Envoy's
SHA ones."""

from __future__ import annotations

from pydantic import Field, model_validator

from meshgate.config.models.consumer import IdentityHeaderName
from meshgate.config.models.policy_common import Section
from meshgate.config.models.refs import SecretObjectReference
from meshgate.config.models.security.api_key_auth import check_secret_ref

HTPASSWD_KEY = ".htpasswd"


class BasicAuth(Section):
    """HTTP Basic authentication (RFC 7617) against an htpasswd file."""

    users: SecretObjectReference = Field(
        description="An Opaque Secret whose `.htpasswd` key holds `user:hash` lines; hashes are "
        "bcrypt (`$2y$`, `$2b$`, `$2a$`: `htpasswd -B`) or SHA-1 (`{SHA}`: `htpasswd -s`)."
    )
    forwardUsernameHeader: IdentityHeaderName | None = Field(
        default=None,
        description="A request header set to the authenticated user name upstream; a copy the "
        "client sent is always removed. Unset: the user name is not forwarded.",
    )

    @model_validator(mode="after")
    def _ref(self) -> BasicAuth:
        check_secret_ref(self.users, ("users",))
        return self
