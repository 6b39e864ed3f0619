"""`gunicorn smsgw_api.wsgi:app` (see gunicorn_conf.py)."""

from smsgw_api import create_app

app = create_app()
