"""The ``edgeser`` command line. Each sub-command is a thin wrapper over a library
function; it holds no logic of its own beyond argument parsing and reporting.

- :mod:`edgeser.cli.entry`: the top parser, :func:`main` and the dispatch;
- :mod:`edgeser.cli.options`: the argument helpers the commands share (value types, the
  training config's ``--<field>`` options, ``--executor``, server options);
- :mod:`edgeser.cli.training`: ``prepare``, ``validate``, ``synth``, ``train``,
  ``evaluate``, ``reproduce``, ``compare``, ``demo``;
- :mod:`edgeser.cli.export`: ``export``;
- :mod:`edgeser.cli.runtime`: ``predict``, ``stream``;
- :mod:`edgeser.cli.serving`: ``web``, ``serve``.

Errors the user can fix (bad paths, wrong corpora, invalid splits, unreadable
audio) print one line, ``edgeser: error: ...``, and exit with status 2.

Each command imports its stage inside its handler: ``edgeser predict`` and ``stream`` run
in the torch-free runtime install (numpy, soundfile, soxr, onnxruntime), so building the
parser must not import torch, transformers or pandas, and no command pays for another's.
"""

from __future__ import annotations

from edgeser.cli.entry import build_parser, main

__all__ = ["build_parser", "main"]
