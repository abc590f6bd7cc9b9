"""Task heads (issue 11): logits and label names of models converted from HF
*For* checkpoints (sequence classification, token classification, question
answering). Model.classify / Model.logits use these helpers."""
import ctypes
from collections import namedtuple

import numpy as np

from . import _lib as L
from ._errors import check

HEAD_KINDS = {0: "none", 1: "sequence_classification", 2: "token_classification", 3: "question_answering"}

Logits = namedtuple("Logits", ["logits", "labels", "kind", "cu_seqlens"])
Logits.__doc__ = """Model.classify result: logits float32 [rows, cols] ([n, num_labels] for
sequence classification, [T, num_labels] for token classification with rows
packed like the input, [T, 2] start/end for question answering), labels (the
label names in id order), kind (the head kind's name) and cu_seqlens [n + 1]."""


def labels(model):
    """The model's label names in id order (config.json's id2label)."""
    lib = L.lib()
    out = []
    n = ctypes.c_size_t()
    for i in range(model.info.num_labels):
        check(lib.raptor_model_label(model.handle, i, None, 0, ctypes.byref(n)))
        buf = ctypes.create_string_buffer(n.value + 1)
        check(lib.raptor_model_label(model.handle, i, buf, n.value + 1, ctypes.byref(n)))
        out.append(buf.value.decode("utf-8"))
    return out


def attach_logits(call, model, want):
    """Adds a float32 logits buffer to call.output (a _Call) when want is set."""
    call.logits = None
    if not want:
        return
    o = call.output
    o.struct_size = ctypes.sizeof(o)  # the current size: the logits fields count
    rows, cols = ctypes.c_int64(), ctypes.c_int64()
    check(L.lib().raptor_model_logits_shape(model.handle, ctypes.byref(call.batch), ctypes.byref(rows),
                                            ctypes.byref(cols)))
    call.logits = np.empty((rows.value, cols.value), dtype=np.float32)
    o.logits = call.logits.ctypes.data if call.logits.size else None
    o.logits_bytes = call.logits.nbytes
