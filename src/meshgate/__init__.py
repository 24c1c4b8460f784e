"""meshgate: an API gateway and a service mesh in one Python package."""

__version__ = "0.1.0"
