"""The HTTP embedding and search service over the runtime (``vopstore serve``).

:class:`~vopstore.serving.service.Service` holds a Retriever, dynamic batchers and
the tenant checks; :func:`~vopstore.serving.app.create_app` is its FastAPI layer;
:func:`~vopstore.serving.run.serve` runs it under uvicorn. FastAPI, uvicorn and prometheus-client are
imported only here.
"""
