"""Engine, Model and Request: the Python face of raptor.h."""
import asyncio
import atexit
import concurrent.futures
import ctypes
import itertools
import os
import threading
import weakref
from collections import namedtuple

import numpy as np

from . import _heads
from . import _lib as L
from ._errors import InvalidArgumentError, InvalidHandleError, OutOfRangeError, WaitTimeoutError, check, error_for

_BACKENDS = {"auto": L.BACKEND_AUTO, "cpu": L.BACKEND_CPU, "cuda": L.BACKEND_CUDA}
_DTYPES = {"fp32": L.DTYPE_FP32, "float32": L.DTYPE_FP32, "fp16": L.DTYPE_FP16, "float16": L.DTYPE_FP16,
           "bf16": L.DTYPE_BF16, "bfloat16": L.DTYPE_BF16}
_OUT_DTYPES = {"float32": (L.DTYPE_FP32, np.float32), "fp32": (L.DTYPE_FP32, np.float32),
               "float16": (L.DTYPE_FP16, np.float16), "fp16": (L.DTYPE_FP16, np.float16)}
_POOLINGS = {"mean": L.POOLING_MEAN, "cls": L.POOLING_CLS, "pooler": L.POOLING_POOLER}
_SHUTDOWN_MODES = {"drain": L.SHUTDOWN_DRAIN, "cancel": L.SHUTDOWN_CANCEL}
_FAMILIES = {L.FAMILY_BERT: "bert", L.FAMILY_ROBERTA: "roberta", L.FAMILY_BIGBIRD: "bigbird"}
_ATTENTIONS = {L.ATTENTION_DENSE: "dense", L.ATTENTION_BLOCK_SPARSE: "block_sparse"}
_ACTIVATIONS = {L.ACTIVATION_GELU: "gelu", L.ACTIVATION_GELU_TANH: "gelu_tanh"}
_WEIGHT_DTYPES = {L.DTYPE_FP32: "f32", L.DTYPE_FP16: "f16", L.DTYPE_BF16: "bf16"}


def version():
    """The loaded library's version string."""
    return L.lib().raptor_version().decode()


def abi_version():
    """The loaded library's ABI version."""
    return int(L.lib().raptor_abi_version())


def status_name(status):
    """The constant name of a status code, e.g. "INVALID_ARGUMENT"."""
    return L.lib().raptor_status_name(status).decode()


_log_fn = None  # the installed ctypes log callback, kept alive while installed


def set_log_handler(fn, level=L.LOG_INFO):
    """Sends the library's log lines at `level` and above to fn(level, message).
    fn=None restores the default (stderr)."""
    global _log_fn
    if fn is None:
        check(L.lib().raptor_set_log_callback(L.raptor_log_fn(), level, None))
        _log_fn = None
        return

    def trampoline(lvl, msg, _user):
        try:
            fn(int(lvl), msg.decode("utf-8", "replace") if msg else "")
        except Exception:  # a log handler must not break the library's thread
            pass

    cb = L.raptor_log_fn(trampoline)
    check(L.lib().raptor_set_log_callback(cb, level, None))
    _log_fn = cb


ModelInfo = namedtuple("ModelInfo", [
    "family", "vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions",
    "max_sequence_length", "type_vocab_size", "activation", "attention", "block_size", "random_blocks",
    "position_offset", "pad_token_id", "weight_dtype", "has_pooler", "has_tokenizer", "layer_norm_eps",
    "head_kind", "num_labels"])
ModelInfo.__doc__ = "A model's config (raptor_model_info_t), with enums as names."

Encoding = namedtuple("Encoding", ["pooled", "hidden", "packed", "cu_seqlens"])
Encoding.__doc__ = """encode(..., hidden=True) result: pooled [n, h] (None without pooling), hidden: a list
of [len_i, h] views into packed [T, h], and cu_seqlens [n + 1] (int32)."""

_live_engines = weakref.WeakSet()


@atexit.register
def _close_engines():
    # Free engines before the interpreter winds down, so no completion
    # callback ever runs into a finalizing interpreter.
    for e in list(_live_engines):
        e.close()


class _Closing:
    """Context manager and finalizer around close()."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Engine(_Closing):
    """A raptor engine (raptor_engine_t). Use it as a context manager or call close().

    backend: "auto" (CUDA when a usable GPU is found, CPU otherwise), "cpu" or "cuda".
    threads: CPU worker threads, 0 = all cores.
    device: the one GPU ordinal; devices: a list of GPU ordinals to serve on
    (one device worker and one copy of the weights per GPU, batches spread
    by load); devices="all": every GPU of the host. An empty list, repeated
    or negative ordinals raise InvalidArgumentError; an ordinal the host
    does not have raises OutOfRangeError. The other options mirror
    raptor_engine_options_t; None keeps the library's default.
    """

    def __init__(self, backend="auto", threads=0, device=0, compute_dtype=None, max_batch_tokens=None,
                 max_queue_delay_us=None, queue_capacity=None, seed=None, kernel_cache_dir=None, devices=None):
        lib = L.lib()
        self._h = None
        self._models = weakref.WeakSet()
        opts = L.raptor_engine_options_t()
        lib.raptor_engine_options_init(ctypes.byref(opts), ctypes.sizeof(opts))
        if isinstance(devices, str):
            if devices != "all":
                raise ValueError('devices must be a list of GPU ordinals or "all", not %r' % devices)
            opts.all_devices = 1
        elif devices is not None:
            ords = [int(d) for d in devices]
            arr = (ctypes.c_int32 * max(len(ords), 1))(*ords)
            opts.devices = ctypes.cast(arr, ctypes.POINTER(ctypes.c_int32))  # copied by raptor_engine_create
            opts.num_devices = len(ords)
        opts.backend = _enum(_BACKENDS, backend, "backend")
        opts.device = device
        opts.worker_threads = threads
        if compute_dtype is not None:
            opts.compute_dtype = _enum(_DTYPES, compute_dtype, "compute_dtype")
        if max_batch_tokens is not None:
            opts.max_batch_tokens = max_batch_tokens
        if max_queue_delay_us is not None:
            opts.max_queue_delay_us = max_queue_delay_us
        if queue_capacity is not None:
            opts.queue_capacity = queue_capacity
        if seed is not None:
            opts.seed = seed
        if kernel_cache_dir is not None:
            opts.kernel_cache_dir = os.fsencode(kernel_cache_dir)
        h = L.raptor_engine_p()
        check(lib.raptor_engine_create(ctypes.byref(opts), ctypes.byref(h)))
        self._h = h.value
        _live_engines.add(self)

    @property
    def handle(self):
        """The raw raptor_engine_t* as an int; raises InvalidHandleError once closed."""
        if self._h is None:
            raise InvalidHandleError("engine is closed")
        return self._h

    @property
    def backend(self):
        """The backend the engine runs on: "cpu" or "cuda"."""
        return L.lib().raptor_engine_backend(self.handle).decode()

    def stats(self):
        """The engine's statistics (raptor_engine_stats_t) as a dict. The
        per-status arrays become dicts {status name: count} of the nonzero
        counts; ratios and rates are floats."""
        s = L.raptor_engine_stats_t()
        s.struct_size = ctypes.sizeof(s)
        check(L.lib().raptor_engine_get_stats(self.handle, ctypes.byref(s)))
        out = {}
        for name, ctype in s._fields_:
            if name == "struct_size":
                continue
            v = getattr(s, name)
            if name.endswith("_by_status"):
                out[name] = {status_name(i): int(c) for i, c in enumerate(v) if c}
            elif ctype is ctypes.c_double:
                out[name] = float(v)
            else:
                out[name] = int(v)
        return out

    @property
    def device_count(self):
        """How many devices the engine serves on."""
        n = ctypes.c_int32()
        check(L.lib().raptor_engine_device_count(self.handle, ctypes.byref(n)))
        return n.value

    def device_stats(self):
        """Per-device statistics (raptor_device_stats_t), a list of dicts:
        index, ordinal, failed (bool), busy_lanes, batches, requests, tokens,
        requeued, failed_in_flight, outstanding_cost, weight_bytes and the
        device memory (memory_in_use_bytes, memory_cached_bytes,
        memory_total_bytes; 0 on the CPU)."""
        out = []
        for i in range(self.device_count):
            s = L.raptor_device_stats_t()
            s.struct_size = ctypes.sizeof(s)
            check(L.lib().raptor_engine_get_device_stats(self.handle, i, ctypes.byref(s)))
            d = {name: getattr(s, name) for name, _ in s._fields_ if name != "struct_size"}
            d["failed"] = bool(d["failed"])
            out.append(d)
        return out

    def metrics(self):
        """The engine's metrics in the Prometheus text exposition format (str)."""
        lib = L.lib()
        n = ctypes.c_size_t()
        check(lib.raptor_engine_metrics_prometheus(self.handle, None, 0, ctypes.byref(n)))
        for _ in range(8):  # the text may grow between the size query and the call
            buf = ctypes.create_string_buffer(n.value + 4096)
            status = lib.raptor_engine_metrics_prometheus(self.handle, buf, len(buf), ctypes.byref(n))
            if status == L.OK:
                return buf.raw[:n.value].decode()
            if status != L.ERR_BUFFER_TOO_SMALL:
                check(status)
            n.value = 2 * len(buf)
        raise RuntimeError("the metrics text kept growing")

    def shutdown(self, mode="drain", timeout=None):
        """Stops the engine's service (raptor_engine_shutdown): submits, encodes
        and loads raise ShutdownError from now on. mode "drain" lets pending
        requests complete for up to `timeout` seconds (None = no limit);
        "cancel" completes them with ShutdownError at once. Returns when every
        request has completed; a drain that runs out of time raises
        WaitTimeoutError (the rest then completed with ShutdownError). The
        engine stays usable for stats() and metrics(); close it afterwards."""
        us = -1 if timeout is None else int(timeout * 1e6)
        check(L.lib().raptor_engine_shutdown(self.handle, _enum(_SHUTDOWN_MODES, mode, "mode"), us))

    def load(self, path):
        """Loads a raptor model file (see `raptor convert`)."""
        out = L.raptor_model_p()
        check(L.lib().raptor_model_load(self.handle, os.fsencode(path), ctypes.byref(out)))
        return self._adopt(out.value)

    def load_bytes(self, data):
        """Loads a model from a file image in memory (bytes-like); the library copies it."""
        buf = memoryview(data).cast("B")
        arr = (ctypes.c_char * len(buf)).from_buffer_copy(buf) if len(buf) else None
        out = L.raptor_model_p()
        check(L.lib().raptor_model_load_from_memory(self.handle, arr, len(buf), ctypes.byref(out)))
        return self._adopt(out.value)

    def _adopt(self, h):
        m = Model(self, h)
        self._models.add(m)
        return m

    def close(self):
        """Frees the engine and its models; pending requests complete with SHUTDOWN first."""
        h, self._h = self._h, None
        if h is None:
            return
        for m in list(self._models):
            m._h = None  # the engine frees its models
        _live_engines.discard(self)
        L.lib().raptor_engine_free(h)


class Model(_Closing):
    """A loaded model (raptor_model_t); create it with Engine.load or Engine.load_bytes."""

    def __init__(self, engine, handle):
        self.engine = engine  # keeps the engine alive while the model is
        self._h = handle
        self._info = None

    @property
    def handle(self):
        """The raw raptor_model_t* as an int; raises InvalidHandleError once closed."""
        if self._h is None:
            raise InvalidHandleError("model is closed")
        return self._h

    @property
    def info(self):
        """The model's config as a ModelInfo."""
        if self._info is None:
            i = L.raptor_model_info_t()
            i.struct_size = ctypes.sizeof(i)
            check(L.lib().raptor_model_get_info(self.handle, ctypes.byref(i)))
            v = {name: getattr(i, name) for name, _ in i._fields_ if name != "struct_size"}
            v["family"] = _FAMILIES.get(v["family"], v["family"])
            v["attention"] = _ATTENTIONS.get(v["attention"], v["attention"])
            v["activation"] = _ACTIVATIONS.get(v["activation"], v["activation"])
            v["weight_dtype"] = _WEIGHT_DTYPES.get(v["weight_dtype"], v["weight_dtype"])
            v["has_pooler"] = bool(v["has_pooler"])
            v["has_tokenizer"] = bool(v["has_tokenizer"])
            v["head_kind"] = _heads.HEAD_KINDS.get(v["head_kind"], v["head_kind"])
            self._info = ModelInfo(**v)
        return self._info

    def tokenize(self, text, max_tokens=0):
        """Token ids (int32 numpy array) of `text` with the model's WordPiece
        vocabulary, [CLS] first and [SEP] last, truncated to max_tokens (0 = the
        model's longest sequence)."""
        lib = L.lib()
        raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        n = ctypes.c_size_t()
        check(lib.raptor_model_tokenize(self.handle, raw, len(raw), max_tokens, None, 0, ctypes.byref(n)))
        ids = np.empty(n.value, dtype=np.int32)
        check(lib.raptor_model_tokenize(self.handle, raw, len(raw), max_tokens, _ptr(ids, L.c_int32_p),
                                        ids.size, ctypes.byref(n)))
        return ids[:n.value]

    def pack(self, inputs, max_tokens=0):
        """Packs a list of inputs (str, or sequences of token ids) into
        (token_ids int32 [T], cu_seqlens int32 [n + 1]). Text is tokenized with
        the model's vocabulary."""
        if isinstance(inputs, (str, bytes)):
            raise TypeError("inputs must be a list of str or of token-id sequences, not a single string")
        seqs = []
        for x in inputs:
            if isinstance(x, (str, bytes)):
                seqs.append(self.tokenize(x, max_tokens))
            else:
                seqs.append(_ids(x))
        cu = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum([s.size for s in seqs], out=cu[1:])
        if cu[-1] > np.iinfo(np.int32).max:
            raise OutOfRangeError("batch of %d tokens does not fit int32 offsets" % cu[-1])
        ids = np.concatenate(seqs) if seqs else np.empty(0, dtype=np.int32)
        return np.ascontiguousarray(ids, dtype=np.int32), cu.astype(np.int32)

    def _pack_all(self, inputs, token_type_ids, max_tokens):
        ids, cu = self.pack(inputs, max_tokens)
        tt = None
        if token_type_ids is not None and len(token_type_ids):
            tt = np.concatenate([_ids(t) for t in token_type_ids])
        return ids, cu, tt

    def encode(self, inputs, pooling="mean", normalize=False, hidden=False, dtype="float32",
               token_type_ids=None, seeds=None, max_tokens=0):
        """Encodes a list of inputs: str (tokenized by the model) or token-id
        sequences (lists or numpy integer arrays).

        Returns the pooled embeddings [n, hidden_size] (pooling "mean" or "cls",
        L2-normalised with normalize=True), or with hidden=True an Encoding
        (pooled, hidden list of [len_i, h], packed [T, h], cu_seqlens).
        pooling=None computes no pooled output. dtype: "float32" or "float16".
        token_type_ids: None or one sequence per input; seeds: None or one
        uint64 per input (the sparse plan's per-request seeds).
        """
        ids, cu, tt = self._pack_all(inputs, token_type_ids, max_tokens)
        return self.encode_packed(ids, cu, pooling=pooling, normalize=normalize, hidden=hidden, dtype=dtype,
                                  token_type_ids=tt, seeds=seeds)

    def encode_packed(self, token_ids, cu_seqlens, pooling="mean", normalize=False, hidden=False,
                      dtype="float32", token_type_ids=None, seeds=None, pooled_out=None, hidden_out=None):
        """Encodes a packed batch as raptor_encode does: token_ids [T] and
        cu_seqlens [n + 1] are passed as given (the library validates them).
        pooled_out / hidden_out: optional preallocated C-contiguous arrays of
        the output dtype to write into (their size is passed as the buffer size).
        Returns what encode returns."""
        call = _Call(self, token_ids, cu_seqlens, pooling, normalize, hidden, dtype, token_type_ids, seeds,
                     pooled_out, hidden_out)
        check(L.lib().raptor_encode(self.handle, ctypes.byref(call.batch), ctypes.byref(call.output)))
        return call.result()

    def submit(self, inputs, pooling="mean", normalize=False, hidden=False, dtype="float32",
               token_type_ids=None, seeds=None, max_tokens=0, priority=0, deadline=None, block_timeout=0):
        """Submits inputs for asynchronous encoding and returns a Request at once.
        Same arguments as encode; the Request's result() is what encode returns.
        Scheduling (raptor_submit_options_t): priority (higher runs first);
        deadline: None, or seconds from now by which the request must complete
        (else it fails with DeadlineExceededError); block_timeout: seconds to
        wait for room in a full queue before BusyError (0 = none, None = no limit)."""
        ids, cu, tt = self._pack_all(inputs, token_type_ids, max_tokens)
        return self.submit_packed(ids, cu, pooling=pooling, normalize=normalize, hidden=hidden, dtype=dtype,
                                  token_type_ids=tt, seeds=seeds, priority=priority, deadline=deadline,
                                  block_timeout=block_timeout)

    def submit_packed(self, token_ids, cu_seqlens, pooling="mean", normalize=False, hidden=False,
                      dtype="float32", token_type_ids=None, seeds=None, priority=0, deadline=None,
                      block_timeout=0):
        """The asynchronous form of encode_packed: returns a Request."""
        call = _Call(self, token_ids, cu_seqlens, pooling, normalize, hidden, dtype, token_type_ids, seeds,
                     None, None)
        options = None
        if priority or deadline is not None or block_timeout != 0:
            options = L.raptor_submit_options_t()
            L.lib().raptor_submit_options_default(ctypes.byref(options))
            options.priority = priority
            if deadline is not None:
                if deadline <= 0:
                    raise InvalidArgumentError("deadline must be a positive number of seconds, not %r" % (deadline,))
                options.deadline_us = max(1, int(deadline * 1e6))
            options.block_timeout_us = -1 if block_timeout is None else int(block_timeout * 1e6)
        return Request(self, call, options)

    def warmup(self, pooling="mean", normalize=False, hidden=False, token_type_ids=False, seeds=False,
               max_tokens=0):
        """Prepares the model for a stream of requests like these, so that the
        first of them do not pay one-time costs (raptor_model_warmup): on the
        GPU it runs two batches of every batch class such requests can make,
        up to max_tokens tokens per batch (0: every size the engine replays as
        a CUDA graph), capturing their graphs; on the CPU one small batch.
        pooling None: the requests ask for no pooled vectors; hidden: they ask
        for hidden states (or logits); token_type_ids, seeds: they pass them.
        Blocks until done; returns the number of batches run."""
        p = L.raptor_warmup_params_t()
        L.lib().raptor_warmup_params_default(ctypes.byref(p))
        p.max_tokens = int(max_tokens)
        if pooling is None:
            p.pooled = 0
        else:
            p.pooling = _enum(_POOLINGS, pooling, "pooling")
            p.normalize = 1 if normalize else 0
        p.hidden = 1 if hidden else 0
        p.token_type_ids = 1 if token_type_ids else 0
        p.seeds = 1 if seeds else 0
        n = ctypes.c_int64(0)
        check(L.lib().raptor_model_warmup(self.handle, ctypes.byref(p), ctypes.byref(n)))
        return n.value

    @property
    def labels(self):
        """The label names of the model's task head in id order ([] without a head)."""
        return _heads.labels(self)

    def classify(self, inputs, token_type_ids=None, max_tokens=0, seeds=None):
        """Runs the model's task head on a list of inputs (str or token-id
        sequences) and returns a Logits (logits, labels, kind, cu_seqlens).
        A model without a head raises UnsupportedError."""
        ids, cu, tt = self._pack_all(inputs, token_type_ids, max_tokens)
        call = _Call(self, ids, cu, None, False, False, "float32", tt, seeds, None, None)
        _heads.attach_logits(call, self, True)
        check(L.lib().raptor_encode(self.handle, ctypes.byref(call.batch), ctypes.byref(call.output)))
        return _heads.Logits(call.logits, self.labels, self.info.head_kind, call.cu)

    def close(self):
        """Frees the model; its pending requests complete with SHUTDOWN first."""
        h, self._h = self._h, None
        if h is not None:
            self.engine._models.discard(self)
            L.lib().raptor_model_free(h)


class _Call:
    """One encode's batch and output structs, with the arrays they point into."""

    def __init__(self, model, token_ids, cu_seqlens, pooling, normalize, hidden, dtype, token_type_ids, seeds,
                 pooled_out, hidden_out):
        h = model.info.hidden_size
        self.ids = np.ascontiguousarray(token_ids, dtype=np.int32)
        self.cu = np.ascontiguousarray(cu_seqlens, dtype=np.int32)
        n = max(self.cu.size - 1, 0)
        t = self.ids.size
        b = L.raptor_batch_t()
        L.lib().raptor_batch_default(ctypes.byref(b))
        b.token_ids = _ptr(self.ids, L.c_int32_p)
        b.num_tokens = t
        b.cu_seqlens = _ptr(self.cu, L.c_int32_p)
        b.num_seqs = n
        self.tt = None
        if token_type_ids is not None:
            self.tt = np.ascontiguousarray(token_type_ids, dtype=np.int32)
            b.token_type_ids = _ptr(self.tt, L.c_int32_p)
        self.seeds = None
        if seeds is not None:
            self.seeds = np.ascontiguousarray(seeds, dtype=np.uint64)
            b.seeds = _ptr(self.seeds, ctypes.POINTER(ctypes.c_uint64))
        self.batch = b

        if dtype not in _OUT_DTYPES:
            raise InvalidArgumentError("dtype must be float32 or float16, not %r" % (dtype,))
        code, npdt = _OUT_DTYPES[dtype]
        o = L.raptor_output_t()
        L.lib().raptor_output_default(ctypes.byref(o))
        o.dtype = code
        o.normalize = 1 if normalize else 0
        self.pooled = None
        if pooling is not None:
            o.pooling = _enum(_POOLINGS, pooling, "pooling")
            self.pooled = pooled_out if pooled_out is not None else np.empty((n, h), dtype=npdt)
            _check_out(self.pooled, npdt, "pooled_out")
            o.pooled = self.pooled.ctypes.data if self.pooled.size else None
            o.pooled_bytes = self.pooled.nbytes
        self.hidden = None
        if hidden or hidden_out is not None:
            self.hidden = hidden_out if hidden_out is not None else np.empty((t, h), dtype=npdt)
            _check_out(self.hidden, npdt, "hidden_out")
            o.hidden = self.hidden.ctypes.data if self.hidden.size else None
            o.hidden_bytes = self.hidden.nbytes
        self.output = o
        self.want_hidden = bool(hidden or hidden_out is not None)

    def result(self):
        if not self.want_hidden:
            return self.pooled
        views = [self.hidden[self.cu[i]:self.cu[i + 1]] for i in range(self.cu.size - 1)]
        return Encoding(self.pooled, views, self.hidden, self.cu)


# Asynchronous requests. One ctypes completion callback serves every request;
# user_data is a key into _pending, which keeps each Request (its arrays and
# its Python objects) alive until the library has called back.
_pending = {}
_pending_lock = threading.Lock()
_keys = itertools.count(1)


def _on_complete(req, status, user_data):
    with _pending_lock:
        r = _pending.pop(user_data or 0, None)
    if r is None:
        return
    try:
        r._complete(req, status)
    except BaseException:  # never let an exception unwind into the library
        pass


_completion = L.raptor_completion_fn(_on_complete)  # lives as long as the module


class Request:
    """An asynchronous encode (raptor_request_t), future-like: result(), done(),
    poll(), wait(), cancel(), add_done_callback(), and `await request`."""

    def __init__(self, model, call, options=None):
        self.model = model
        self._call = call
        self._h = None
        self._future = concurrent.futures.Future()
        self._future.set_running_or_notify_cancel()
        handle = model.handle
        key = next(_keys)
        with _pending_lock:
            _pending[key] = self
        out = L.raptor_request_p()
        if options is None:
            status = L.lib().raptor_submit(handle, ctypes.byref(call.batch), ctypes.byref(call.output),
                                           _completion, key, ctypes.byref(out))
        else:
            status = L.lib().raptor_submit_with_options(handle, ctypes.byref(call.batch), ctypes.byref(call.output),
                                                        ctypes.byref(options), _completion, key, ctypes.byref(out))
        if status != L.OK:
            with _pending_lock:
                _pending.pop(key, None)
            check(status)
        self._h = out.value

    def _complete(self, req, status):
        if status == L.OK:
            self._future.set_result(self._call.result())
        else:
            msg = L.lib().raptor_request_error(req)
            self._future.set_exception(error_for(status, msg.decode("utf-8", "replace") if msg else ""))

    @property
    def handle(self):
        if self._h is None:
            raise InvalidHandleError("request is freed")
        return self._h

    def poll(self):
        """True when the request has completed (raptor_request_poll); never blocks."""
        done = ctypes.c_int32()
        res = L.raptor_status_t()
        check(L.lib().raptor_request_poll(self.handle, ctypes.byref(done), ctypes.byref(res)))
        return bool(done.value)

    def wait(self, timeout=None):
        """Waits for completion (raptor_request_wait), at most `timeout` seconds
        (None = no limit), and returns the result or raises the request's error.
        Raises WaitTimeoutError if it is still running."""
        us = -1 if timeout is None else int(timeout * 1e6)
        res = L.raptor_status_t()
        check(L.lib().raptor_request_wait(self.handle, us, ctypes.byref(res)))
        return self._future.result()  # the completion callback is running or has run

    def result(self, timeout=None):
        """The result (what encode returns); raises the request's error."""
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise WaitTimeoutError("request still running after %s s" % timeout) from None

    def exception(self, timeout=None):
        return self._future.exception(timeout)

    def done(self):
        """True once the completion callback has delivered the result."""
        return self._future.done()

    def cancel(self):
        """Asks the library to cancel; the request then completes with CancelledError
        unless it had already completed."""
        check(L.lib().raptor_request_cancel(self.handle))

    def add_done_callback(self, fn):
        """Calls fn(self) on completion, on the library's thread (or now if done)."""
        self._future.add_done_callback(lambda _f: fn(self))

    def __await__(self):
        return asyncio.wrap_future(self._future).__await__()

    def free(self):
        """Frees the request handle (a pending request is cancelled first)."""
        h, self._h = self._h, None
        if h is not None:
            L.lib().raptor_request_free(h)

    def __del__(self):
        try:
            self.free()
        except Exception:
            pass


def _enum(table, value, what):
    if isinstance(value, str):
        try:
            return table[value.lower()]
        except KeyError:
            raise InvalidArgumentError("unknown %s %r (one of %s)" % (what, value, ", ".join(table))) from None
    return int(value)  # raw enum values go to the library unchecked


def _ids(x):
    a = np.asarray(x)
    if a.size == 0:
        return np.empty(0, dtype=np.int32)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise InvalidArgumentError("a token-id sequence must be a 1-D array of integers, got %s %s" %
                                   (a.dtype, a.shape))
    if a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max:
        raise OutOfRangeError("token id does not fit int32")
    return a.astype(np.int32, copy=False)


def _ptr(arr, ptype):
    return arr.ctypes.data_as(ptype) if arr.size else None


def _check_out(arr, npdt, what):
    if not isinstance(arr, np.ndarray) or arr.dtype != npdt or not arr.flags.c_contiguous:
        raise InvalidArgumentError("%s must be a C-contiguous numpy array of %s" % (what, np.dtype(npdt).name))
