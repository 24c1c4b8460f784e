"""HTTPRoute filters (rules[].filters and backendRefs[].filters) -> filter objects.

The filter classes live in ``meshgate.filters.gateway_api``; this module only maps the
config shape onto their constructors. ExtensionRef filters are a config error until
the Plugin kind lands: silently skipping an auth plugin, say, would open a route.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshgate.config.compile.backends import BackendResolver
from meshgate.config.compile.inputs import ErrorSink, Path

if TYPE_CHECKING:
    from meshgate.config.loader import LoadedResource
    from meshgate.filters.base import Filter


def _pairs(items: Any) -> list[tuple[str, str]]:
    return [(h.name, h.value) for h in items or ()]


def _path_modifier(path: Any) -> tuple[str | None, str | None]:
    if path is None:
        return None, None
    if path.type == "ReplaceFullPath":
        return "ReplaceFullPath", path.replaceFullPath
    return "ReplacePrefixMatch", path.replacePrefixMatch


class FilterBuilder:
    """Builds the filters of one route; mirror backends resolve through ``resolver``."""

    def __init__(
        self, res: LoadedResource, resolver: BackendResolver, errors: ErrorSink
    ) -> None:
        self.res = res
        self.resolver = resolver
        self.errors = errors
        # Clusters the built filters send to (mirrors), so the snapshot keeps them.
        self.clusters: set[str] = set()
        # (reason, message) of mirror refs that did not resolve, for ResolvedRefs.
        self.unresolved: list[tuple[str, str]] = []

    def build(self, filters: Any, path: Path) -> tuple[Filter, ...]:
        from meshgate.filters import gateway_api as gw

        out: list[Filter] = []
        for i, spec in enumerate(filters or ()):
            fpath = (*path, i)
            kind = spec.type
            if kind == "RequestHeaderModifier":
                m = spec.requestHeaderModifier
                out.append(
                    gw.RequestHeaderModifier(
                        set=_pairs(m.set), add=_pairs(m.add), remove=list(m.remove or ())
                    )
                )
            elif kind == "ResponseHeaderModifier":
                m = spec.responseHeaderModifier
                out.append(
                    gw.ResponseHeaderModifier(
                        set=_pairs(m.set), add=_pairs(m.add), remove=list(m.remove or ())
                    )
                )
            elif kind == "URLRewrite":
                m = spec.urlRewrite
                path_type, path_value = _path_modifier(m.path)
                out.append(
                    gw.URLRewrite(
                        hostname=m.hostname, path_type=path_type, path_value=path_value
                    )
                )
            elif kind == "RequestRedirect":
                m = spec.requestRedirect
                path_type, path_value = _path_modifier(m.path)
                out.append(
                    gw.RequestRedirect(
                        scheme=m.scheme,
                        hostname=m.hostname,
                        port=m.port,
                        path_type=path_type,
                        path_value=path_value,
                        status_code=m.statusCode if m.statusCode is not None else 302,
                    )
                )
            elif kind == "RequestMirror":
                out.append(self._mirror(spec.requestMirror, gw))
            elif kind == "CORS":
                m = spec.cors
                out.append(
                    gw.CORS(
                        allow_origins=list(m.allowOrigins or ()),
                        allow_methods=list(m.allowMethods or ()),
                        allow_headers=list(m.allowHeaders or ()),
                        expose_headers=list(m.exposeHeaders or ()),
                        max_age=m.maxAge if m.maxAge is not None else 5,
                        allow_credentials=bool(m.allowCredentials),
                    )
                )
            elif kind == "ExtensionRef":
                self.errors.add(
                    self.res, (*fpath, "type"), "ExtensionRef filters are not supported yet"
                )
            else:
                self.errors.add(self.res, (*fpath, "type"), f"filter type {kind} is not supported")
        return tuple(out)

    def _mirror(self, m: Any, gw: Any) -> Filter:
        resolution = self.resolver.resolve(m.backendRef, self.res.namespace)
        if resolution.cluster is None:
            self.unresolved.append((resolution.reason, resolution.message))
        else:
            self.clusters.add(resolution.cluster)
        if m.percent is not None:
            percent = float(m.percent)
        elif m.fraction is not None:
            denominator = m.fraction.denominator or 100
            percent = 100.0 * m.fraction.numerator / denominator
        else:
            percent = 100.0
        return gw.RequestMirror(cluster=resolution.cluster, percent=percent)
