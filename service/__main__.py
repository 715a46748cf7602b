"""``python -m service``: serve the app with uvicorn on HOST:PORT (default 127.0.0.1:8000)."""

from __future__ import annotations

import uvicorn

from service.config import get_settings
from service.observability import configure_logging


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_flush_interval)
    # access_log off: the app writes its own structured line per request.
    uvicorn.run("service.main:app", host=settings.host, port=settings.port, access_log=False)


if __name__ == "__main__":
    main()
