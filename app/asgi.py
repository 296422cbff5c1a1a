"""ASGI entry point for production servers: ``uvicorn slimforge.app.asgi:app``.

Settings are read from the environment here, at the edge, and passed into the factory.
"""

from slimforge.app.main import create_app
from slimforge.app.observability import configure_logging
from slimforge.app.settings import Settings

settings = Settings()
configure_logging(settings)
app = create_app(settings)
