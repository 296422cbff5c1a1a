"""A small web dashboard served by the API at ``/`` (static files, no build step)."""
