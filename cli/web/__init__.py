"""The browser views of `trainctl ui`: a small server (server.py), its JSON (api.py) and static
pages (static/)."""
