"""ctypes declarations of include/raptor.h (ABI version 1), field for field.

Every struct and every function of the header is declared here with its exact
types; nothing else in the package calls the library except through `lib()`.
"""
import ctypes
import ctypes.util
import os
import threading

ABI_VERSION = 1

# Status codes (raptor_status_t).
OK = 0
ERR_INVALID_ARGUMENT = 1
ERR_OUT_OF_RANGE = 2
ERR_BUFFER_TOO_SMALL = 3
ERR_INVALID_HANDLE = 4
ERR_IO = 5
ERR_INVALID_MODEL = 6
ERR_UNSUPPORTED = 7
ERR_BACKEND_UNAVAILABLE = 8
ERR_OUT_OF_MEMORY = 9
ERR_BUSY = 10
ERR_DEADLINE_EXCEEDED = 11
ERR_CANCELLED = 12
ERR_SHUTDOWN = 13
ERR_DEVICE_FAILED = 14
ERR_INTERNAL = 15
ERR_TIMEOUT = 16

LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR = 0, 1, 2, 3
BACKEND_AUTO, BACKEND_CPU, BACKEND_CUDA = 0, 1, 2
DTYPE_FP32, DTYPE_FP16, DTYPE_BF16 = 0, 1, 2
FAMILY_BERT, FAMILY_ROBERTA, FAMILY_BIGBIRD = 0, 1, 2
ACTIVATION_GELU, ACTIVATION_GELU_TANH = 0, 1
ATTENTION_DENSE, ATTENTION_BLOCK_SPARSE = 0, 1
MEMORY_HOST, MEMORY_DEVICE = 0, 1
POOLING_CLS, POOLING_MEAN, POOLING_POOLER = 0, 1, 2
SHUTDOWN_DRAIN, SHUTDOWN_CANCEL = 0, 1
STATUS_SLOTS = 32

raptor_status_t = ctypes.c_int32
c_int32_p = ctypes.POINTER(ctypes.c_int32)
c_size_t_p = ctypes.POINTER(ctypes.c_size_t)


class raptor_engine_options_t(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("backend", ctypes.c_int32),
        ("device", ctypes.c_int32),
        ("compute_dtype", ctypes.c_int32),
        ("worker_threads", ctypes.c_int32),
        ("max_batch_tokens", ctypes.c_int64),
        ("max_queue_delay_us", ctypes.c_int64),
        ("queue_capacity", ctypes.c_int64),
        ("seed", ctypes.c_uint64),
        ("kernel_cache_dir", ctypes.c_char_p),
        # Appended (several devices).
        ("devices", ctypes.POINTER(ctypes.c_int32)),
        ("num_devices", ctypes.c_size_t),
        ("all_devices", ctypes.c_int32),
    ]


class raptor_device_stats_t(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("index", ctypes.c_int32),
        ("ordinal", ctypes.c_int32),
        ("failed", ctypes.c_int32),
        ("busy_lanes", ctypes.c_int32),
        ("batches", ctypes.c_uint64),
        ("requests", ctypes.c_uint64),
        ("tokens", ctypes.c_uint64),
        ("requeued", ctypes.c_uint64),
        ("failed_in_flight", ctypes.c_uint64),
        ("outstanding_cost", ctypes.c_double),
        ("weight_bytes", ctypes.c_int64),
        ("memory_in_use_bytes", ctypes.c_int64),
        ("memory_cached_bytes", ctypes.c_int64),
        ("memory_total_bytes", ctypes.c_int64),
    ]


class raptor_engine_stats_t(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("requests_submitted", ctypes.c_uint64),
        ("requests_completed", ctypes.c_uint64),
        ("requests_failed", ctypes.c_uint64),
        ("requests_cancelled", ctypes.c_uint64),
        ("batches", ctypes.c_uint64),
        ("tokens", ctypes.c_uint64),
        ("queue_depth", ctypes.c_int64),
        ("live_models", ctypes.c_int64),
        ("live_requests", ctypes.c_int64),
        ("process_handles", ctypes.c_int64),
        ("process_goroutines", ctypes.c_int64),
        ("process_heap_bytes", ctypes.c_int64),
        # appended (scheduler); the v1 struct ends here (ENGINE_STATS_V1_SIZE)
        ("queue_latency_p50_us", ctypes.c_int64),
        ("queue_latency_p99_us", ctypes.c_int64),
        ("latency_p50_us", ctypes.c_int64),
        ("latency_p99_us", ctypes.c_int64),
        ("scheduler_batches", ctypes.c_uint64),
        ("scheduler_requests", ctypes.c_uint64),
        ("mean_batch_requests", ctypes.c_double),
        ("mean_batch_fill", ctypes.c_double),
        ("padded_tokens", ctypes.c_uint64),
        ("padding_ratio", ctypes.c_double),
        ("tokens_per_second", ctypes.c_double),
        ("device_busy_share", ctypes.c_double),
        ("device_busy_us", ctypes.c_int64),
        ("uptime_us", ctypes.c_int64),
        ("queue_capacity", ctypes.c_int64),
        ("completed_by_status", ctypes.c_uint64 * STATUS_SLOTS),
        ("rejected_by_status", ctypes.c_uint64 * STATUS_SLOTS),
    ]


ENGINE_STATS_V1_SIZE = raptor_engine_stats_t.queue_latency_p50_us.offset


class raptor_warmup_params_t(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("max_tokens", ctypes.c_int64),
        ("token_type_ids", ctypes.c_int32),
        ("seeds", ctypes.c_int32),
        ("hidden", ctypes.c_int32),
        ("pooled", ctypes.c_int32),
        ("pooling", ctypes.c_int32),
        ("normalize", ctypes.c_int32),
    ]


class raptor_submit_options_t(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("priority", ctypes.c_int32),
        ("deadline_us", ctypes.c_int64),
        ("block_timeout_us", ctypes.c_int64),
    ]


class raptor_model_info_t(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("family", ctypes.c_int32),
        ("vocab_size", ctypes.c_int32),
        ("hidden_size", ctypes.c_int32),
        ("num_layers", ctypes.c_int32),
        ("num_heads", ctypes.c_int32),
        ("intermediate_size", ctypes.c_int32),
        ("max_positions", ctypes.c_int32),
        ("max_sequence_length", ctypes.c_int32),
        ("type_vocab_size", ctypes.c_int32),
        ("activation", ctypes.c_int32),
        ("attention", ctypes.c_int32),
        ("block_size", ctypes.c_int32),
        ("random_blocks", ctypes.c_int32),
        ("position_offset", ctypes.c_int32),
        ("pad_token_id", ctypes.c_int32),
        ("weight_dtype", ctypes.c_int32),
        ("has_pooler", ctypes.c_int32),
        ("has_tokenizer", ctypes.c_int32),
        ("layer_norm_eps", ctypes.c_float),
        ("head_kind", ctypes.c_int32),
        ("num_labels", ctypes.c_int32),
    ]


class raptor_batch_t(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("token_ids", c_int32_p),
        ("num_tokens", ctypes.c_size_t),
        ("cu_seqlens", c_int32_p),
        ("num_seqs", ctypes.c_size_t),
        ("token_type_ids", c_int32_p),
        ("seeds", ctypes.POINTER(ctypes.c_uint64)),
    ]


class raptor_output_t(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("memory", ctypes.c_int32),
        ("dtype", ctypes.c_int32),
        ("hidden", ctypes.c_void_p),
        ("hidden_bytes", ctypes.c_size_t),
        ("pooled", ctypes.c_void_p),
        ("pooled_bytes", ctypes.c_size_t),
        ("pooling", ctypes.c_int32),
        ("normalize", ctypes.c_int32),
        ("logits", ctypes.c_void_p),
        ("logits_bytes", ctypes.c_size_t),
    ]


# Handles are opaque pointers; c_void_p carries them as Python ints.
raptor_engine_p = ctypes.c_void_p
raptor_model_p = ctypes.c_void_p
raptor_request_p = ctypes.c_void_p

raptor_log_fn = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_char_p, ctypes.c_void_p)
raptor_completion_fn = ctypes.CFUNCTYPE(None, raptor_request_p, raptor_status_t, ctypes.c_void_p)

_P = ctypes.POINTER
_PROTOTYPES = {
    "raptor_abi_version": (ctypes.c_uint32, []),
    "raptor_version": (ctypes.c_char_p, []),
    "raptor_status_name": (ctypes.c_char_p, [raptor_status_t]),
    "raptor_last_error": (ctypes.c_char_p, []),
    "raptor_set_log_callback": (raptor_status_t, [raptor_log_fn, ctypes.c_int32, ctypes.c_void_p]),
    "raptor_engine_options_default": (None, [_P(raptor_engine_options_t)]),
    "raptor_engine_create": (raptor_status_t, [_P(raptor_engine_options_t), _P(raptor_engine_p)]),
    "raptor_engine_options_init": (None, [_P(raptor_engine_options_t), ctypes.c_size_t]),
    "raptor_engine_device_count": (raptor_status_t, [raptor_engine_p, c_int32_p]),
    "raptor_engine_get_device_stats": (raptor_status_t, [raptor_engine_p, ctypes.c_int32, _P(raptor_device_stats_t)]),
    "raptor_engine_free": (None, [raptor_engine_p]),
    "raptor_engine_backend": (ctypes.c_char_p, [raptor_engine_p]),
    "raptor_engine_get_stats": (raptor_status_t, [raptor_engine_p, _P(raptor_engine_stats_t)]),
    "raptor_model_load": (raptor_status_t, [raptor_engine_p, ctypes.c_char_p, _P(raptor_model_p)]),
    "raptor_model_load_from_memory": (
        raptor_status_t, [raptor_engine_p, ctypes.c_void_p, ctypes.c_size_t, _P(raptor_model_p)]),
    "raptor_model_free": (None, [raptor_model_p]),
    "raptor_model_get_info": (raptor_status_t, [raptor_model_p, _P(raptor_model_info_t)]),
    "raptor_model_tokenize": (
        raptor_status_t,
        [raptor_model_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int32, c_int32_p, ctypes.c_size_t,
         c_size_t_p]),
    "raptor_batch_default": (None, [_P(raptor_batch_t)]),
    "raptor_output_default": (None, [_P(raptor_output_t)]),
    "raptor_encode": (raptor_status_t, [raptor_model_p, _P(raptor_batch_t), _P(raptor_output_t)]),
    "raptor_submit": (
        raptor_status_t,
        [raptor_model_p, _P(raptor_batch_t), _P(raptor_output_t), raptor_completion_fn, ctypes.c_void_p,
         _P(raptor_request_p)]),
    "raptor_request_poll": (raptor_status_t, [raptor_request_p, c_int32_p, _P(raptor_status_t)]),
    "raptor_request_wait": (raptor_status_t, [raptor_request_p, ctypes.c_int64, _P(raptor_status_t)]),
    "raptor_request_cancel": (raptor_status_t, [raptor_request_p]),
    "raptor_request_error": (ctypes.c_char_p, [raptor_request_p]),
    "raptor_request_free": (None, [raptor_request_p]),
    # task heads (appended)
    "raptor_model_logits_shape": (
        raptor_status_t, [raptor_model_p, _P(raptor_batch_t), _P(ctypes.c_int64), _P(ctypes.c_int64)]),
    "raptor_model_label": (
        raptor_status_t, [raptor_model_p, ctypes.c_int32, ctypes.c_char_p, ctypes.c_size_t, c_size_t_p]),
    # scheduler (appended)
    "raptor_submit_options_default": (None, [_P(raptor_submit_options_t)]),
    "raptor_submit_with_options": (
        raptor_status_t,
        [raptor_model_p, _P(raptor_batch_t), _P(raptor_output_t), _P(raptor_submit_options_t), raptor_completion_fn,
         ctypes.c_void_p, _P(raptor_request_p)]),
    "raptor_engine_shutdown": (raptor_status_t, [raptor_engine_p, ctypes.c_int32, ctypes.c_int64]),
    "raptor_engine_metrics_prometheus": (
        raptor_status_t, [raptor_engine_p, ctypes.c_char_p, ctypes.c_size_t, c_size_t_p]),
    # warm-up (appended)
    "raptor_warmup_params_default": (None, [_P(raptor_warmup_params_t)]),
    "raptor_model_warmup": (raptor_status_t, [raptor_model_p, _P(raptor_warmup_params_t), _P(ctypes.c_int64)]),
}


def candidate_paths():
    """Where the library is looked for, in order: $RAPTOR_LIB, the checkout's
    build/libraptor.so (this package lives in <repo>/bindings/python/raptor),
    then the dynamic loader's search (ctypes.util.find_library)."""
    paths = []
    env = os.environ.get("RAPTOR_LIB")
    if env:
        paths.append(env)
    here = os.path.dirname(os.path.abspath(__file__))
    paths.append(os.path.normpath(os.path.join(here, "..", "..", "..", "build", "libraptor.so")))
    found = ctypes.util.find_library("raptor")
    if found:
        paths.append(found)
    return paths


_lock = threading.Lock()
_lib = None


def lib():
    """The loaded library, declared; loaded once per process (a Go c-shared
    library cannot be unloaded)."""
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        handle = None
        for p in candidate_paths():
            if os.environ.get("RAPTOR_LIB") == p or os.path.sep in p:
                if not os.path.exists(p):
                    tried.append(p + " (missing)")
                    if p == os.environ.get("RAPTOR_LIB"):
                        break  # an explicit choice: do not fall back silently
                    continue
            try:
                handle = ctypes.CDLL(p)
                break
            except OSError as e:
                tried.append("%s (%s)" % (p, e))
        if handle is None:
            raise OSError("libraptor.so not found; set RAPTOR_LIB or run ./build.sh. Tried: " + "; ".join(tried))
        for name, (restype, argtypes) in _PROTOTYPES.items():
            f = getattr(handle, name)
            f.restype = restype
            f.argtypes = argtypes
        v = handle.raptor_abi_version()
        if v < ABI_VERSION:
            raise OSError("libraptor ABI version %d is older than this binding's %d" % (v, ABI_VERSION))
        _lib = handle
        return _lib
