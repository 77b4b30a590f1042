"""onnxruntime sessions and the graph's input contract, shared by the runtime, the
exporter and the quantiser (numpy and onnxruntime only)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NBITS_OPTIONS", "ORT_IDENTIFIER", "onnx_session", "pad_batch"]

#: How onnxruntime runs a weight-only 8-bit product it fuses into ``MatMulNBits``: float32
#: arithmetic (its default, level 4, quantises the activations to int8, as edgeser does
#: nowhere else) in blocks of 256 rows (the weights' scales are per column: every block
#: size gives the same numbers; the largest keeps the ``.ort`` file smallest). The same in
#: every session and in the exported ``.ort``, so both answer alike.
NBITS_OPTIONS = {
    "session.qdq_matmulnbits_accuracy_level": "1",
    "session.qdq_matmulnbits_block_size": "256",
}


#: The file identifier of an ORT-format model (bytes 4-8 of a ``.ort`` file).
ORT_IDENTIFIER = b"ORTM"


def onnx_session(path: str | Path | bytes, threads: int | None = None) -> Any:
    """An onnxruntime CPU session with full graph optimisation and quiet logging
    (``threads``: intra-op threads, one inter-op thread; default: onnxruntime's). ``path``
    is an ``.onnx`` or ``.ort`` file, or such a file's bytes.

    Without onnxruntime's memory patterns (a pattern pre-plans one block for a whole run:
    with the extractor run chunk by chunk, tensors allocated as they come peak lower); its
    arena stays (plain allocations fragment the C heap run after run: the 8-bit
    DistilHuBERT model at 10 s, three runs, peaked at 174 MB without the arena and 149 MB
    with it, ``bench/memory.py``)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.enable_mem_pattern = False
    for key, value in NBITS_OPTIONS.items():
        opts.add_session_config_entry(key, value)
    if isinstance(path, bytes):
        ort_format = path[4:8] == ORT_IDENTIFIER
    else:
        ort_format = str(path).endswith(".ort")
    if ort_format:
        opts.add_session_config_entry("session.load_model_format", "ORT")
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def pad_batch(waves: Sequence[np.ndarray], min_samples: int = 0) -> dict[str, np.ndarray]:
    """The graph's feed for 1-D waveforms: rows zero-padded to the longest, and
    ``lengths``, each row's valid samples (at least ``min_samples``: a shorter clip counts
    its zero padding as signal, which is what the graph's first convolution needs)."""
    lengths = np.array([max(len(w), min_samples) for w in waves], dtype=np.int64)
    batch = np.zeros((len(waves), int(lengths.max(initial=0))), dtype=np.float32)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    return {"waveform": batch, "lengths": lengths}
