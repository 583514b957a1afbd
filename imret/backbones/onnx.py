"""The backbone run by ONNX Runtime (``Extractor(runtime="onnx")``, ``--runtime onnx``).

The same weights are exported from the torch module in this process; the head stays
in torch. Measured on 2 cores (EfficientNet-Lite0, one thread): the backbone forward
takes about 2.3× less CPU time than torch's (benchmarks/bench_extract.py).

A traced export freezes sizes (TensorFlow-'SAME' padding is computed from the input
size, and an export with dynamic height and width was measured to give wrong maps at
other sizes), so there is one session per input height × width, made on first use
(about 0.7 s of CPU each for Lite0) and kept for the ``MAX_SESSIONS`` sizes used last:
worth it for collections whose photos share a few sizes (a camera's, a phone's), not
for photos of many sizes.
"""
from __future__ import annotations

import io
import warnings
from collections import OrderedDict

import numpy as np
import torch


def available() -> bool:
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


MAX_SESSIONS = 24


class OnnxBackbone:
    """Callable like ``backbone`` on N×3×h×w float tensors (values 0–255)."""

    def __init__(self, backbone: torch.nn.Module):
        if not available():
            raise ImportError("runtime 'onnx' needs onnxruntime and onnx: pip install 'imret[onnx]'")
        self.backbone = backbone
        self._sessions: OrderedDict[tuple[int, int, int], object] = OrderedDict()

    def _session(self, x: torch.Tensor):
        import onnxruntime as ort

        threads = torch.get_num_threads()
        key = (int(x.shape[2]), int(x.shape[3]), threads)
        sess = self._sessions.get(key)
        if sess is not None:
            self._sessions.move_to_end(key)
        else:
            buf = io.BytesIO()
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer warnings about the frozen padding: handled by the key
                torch.onnx.export(self.backbone, (x.contiguous(),), buf, input_names=["x"], output_names=["f"],
                                  dynamic_axes={"x": {0: "n"}, "f": {0: "n"}},
                                  opset_version=17, dynamo=False)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
            self._sessions[key] = sess
            if len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return sess

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().contiguous()
        out = self._session(x).run(None, {"x": np.ascontiguousarray(x.numpy())})[0]
        return torch.from_numpy(out)
