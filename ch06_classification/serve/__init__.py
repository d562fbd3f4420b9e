"""``gpt-spam serve``: a trained run as a web page and a JSON API (FastAPI on uvicorn).

``app.py`` the routes, ``batcher.py`` the queue that joins requests into batches,
``card.py`` the run's card, ``limits.py`` the bounds of a request, ``server.py`` the
socket and uvicorn; ``page.html``, ``page.js`` and ``page.css`` the page. FastAPI and
uvicorn are the ``serve`` extra (``pip install -e ".[serve]"``) and are imported only here.
"""
