"""``edgeser serve``: the real-time emotion API (ASGI, Starlette on uvicorn) and its
clients.

- :mod:`edgeser.serve.protocol`: the stream protocol ``edgeser.stream.v1``
  (``docs/stream-protocol.md``), shared by server and clients;
- :mod:`edgeser.serve.app`: the application (limits, API keys, ``/v1/predict``, health,
  metrics, the page) and :mod:`edgeser.serve.session`: one stream on the server;
- :mod:`edgeser.serve.client`: ``stream_file``, ``predict_file`` and ``edgeser stream
  --server``;
- :mod:`edgeser.serve.server`: the ``edgeser serve`` server;
- :mod:`edgeser.serve.rayserve`: ``edgeser serve --ray --replicas N`` (Ray Serve).

Needs ``pip install 'edgeser[runtime,serve]'``; no torch.
"""
