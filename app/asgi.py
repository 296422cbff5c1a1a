"""ASGI entry point for production servers: ``uvicorn app.asgi:app``.

Settings are read from the environment here, at the edge, and passed into the factory.
"""

from app.main import create_app
from app.observability import configure_logging
from app.settings import Settings

settings = Settings()
configure_logging(settings)
app = create_app(settings)
