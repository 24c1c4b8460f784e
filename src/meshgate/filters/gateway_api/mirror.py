"""RequestMirror: mark a share of requests to be copied to another backend.

The filter only decides; the engine sends the copy once the request is read and
ignores its response.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from meshgate.filters.base import Filter
from meshgate.proxy.context import Mirror

if TYPE_CHECKING:
    from meshgate.proxy.context import RequestContext


class RequestMirror(Filter):
    __slots__ = ("_cluster", "_mirror", "_percent", "_threshold")
    name = "RequestMirror"

    def __init__(self, cluster: str | None, percent: float) -> None:
        self._cluster = cluster
        self._percent = percent
        # random() is in [0, 1): 100% always passes, 0% never does.
        self._threshold = percent / 100.0
        # One shared, immutable-by-convention Mirror: nothing to allocate per request.
        self._mirror = Mirror(cluster) if cluster is not None else None

    def on_request(self, ctx: RequestContext) -> None:
        mirror = self._mirror
        if mirror is None:
            # The backendRef did not resolve: the spec sends nothing.
            return
        if self._threshold < 1.0 and random.random() >= self._threshold:
            return
        if ctx.mirrors is None:
            ctx.mirrors = [mirror]
        else:
            ctx.mirrors.append(mirror)

    def describe(self) -> dict:
        return {"type": self.name, "cluster": self._cluster, "percent": self._percent}
