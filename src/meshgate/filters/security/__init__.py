"""Authentication and authorization filters (SecurityPolicy and meshgate's own kinds)."""
