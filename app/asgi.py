"""ASGI entry point for production servers: ``uvicorn app.asgi:app``.

Settings are read from the environment here, at the edge, and passed into the factory.
"""

from app.main import create_app
from app.settings import Settings

app = create_app(Settings())
