"""Offline tools behind commands: features that read files or topics and write files or
topics, outside the worker (``produce``, ``simulate``, ``fit``, ``demo``, ``report``). They
may import ``app.adapters``, ``app.service``, ``schemas``, ``app.domain``,
``app.settings`` and ``app.errors``; never ``app.cli``, ``app.stream``, ``agents`` or
faust."""
