"""Airflow UI plugin: an "Image search" page over the ``images`` index.

The api-server mounts the FastAPI app of :mod:`imagelabels.webapp` at ``/image-search`` (page,
static files and JSON routes; Airflow's authentication required) and the UI shows it under
Browse > Image search, embedded at ``/plugin/image-search``. The page's HTML, JavaScript and CSS
live in ``plugins/image_search/`` (no build step). ``/image-search/?image=<document id>`` opens one
image's detail view (:func:`imagelabels.search.queries.image_page_url`).
"""

from __future__ import annotations

from pathlib import Path

from airflow.plugins_manager import AirflowPlugin

from imagelabels.search.queries import PAGE_MOUNT
from imagelabels.webapp import create_app

URL_PREFIX = PAGE_MOUNT
STATIC_DIR = Path(__file__).resolve().parent / "image_search"


class ImageSearchPlugin(AirflowPlugin):
    name = "image_search"
    fastapi_apps = [  # noqa: RUF012 - AirflowPlugin declares these as class attributes
        {"app": create_app(STATIC_DIR), "url_prefix": URL_PREFIX, "name": "Image search"}
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Image search",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "image-search",
        }
    ]
