/*
 * raptor.h — the C ABI of raptor, a transformer-encoder inference engine for
 * long, variable-length inputs (BERT, RoBERTa, BigBird; dense or block-sparse
 * attention), on the GPU when one is usable and on the CPU otherwise.
 *
 * ABI version 1. This header is append-only within a major ABI version:
 * functions, enum values and struct fields are only ever added at the end.
 *
 * Conventions
 *  - Every function that can fail returns raptor_status_t (RAPTOR_OK == 0).
 *    On failure a human-readable message is available from
 *    raptor_last_error() on the calling thread, and out parameters are left
 *    untouched.
 *  - Handles are opaque. Each create or load function has a matching free; every
 *    free function accepts NULL. A freed or foreign handle passed to any function is
 *    detected and answered with RAPTOR_ERR_INVALID_HANDLE (it is never
 *    dereferenced).
 *  - Structs passed in carry their own size in `struct_size`; fill them with
 *    their *_default() function first, then set the fields you need. A struct
 *    whose size the library does not know gives RAPTOR_ERR_INVALID_ARGUMENT.
 *  - Strings are UTF-8 and NUL-terminated unless a length is given.
 *  - "Ownership:" lines say who owns each buffer and for how long.
 *  - Functions are thread-safe unless stated otherwise.
 *  - The library never writes to stdout, never exits or aborts the process;
 *    logs go to the callback set by raptor_set_log_callback (stderr by
 *    default). Internal faults are reported as RAPTOR_ERR_INTERNAL.
 *
 * Limits
 *  - libraptor is a Go c-shared library: it cannot be unloaded
 *    (golang/go#11100). dlclose() does not release it; load it once per
 *    process.
 *  - fork() after the library has been loaded is not supported in the child
 *    (the Go runtime's threads do not survive fork).
 */
#ifndef RAPTOR_H
#define RAPTOR_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(RAPTOR_BUILD)
#    define RAPTOR_API __declspec(dllexport)
#  else
#    define RAPTOR_API __declspec(dllimport)
#  endif
#else
#  define RAPTOR_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Versions                                                                 */
/* ------------------------------------------------------------------------ */

/* The ABI version this header describes. */
#define RAPTOR_ABI_VERSION 1

/* The ABI version of the loaded library. A host built against header version
 * V works with any library whose raptor_abi_version() >= V (same major ABI). */
RAPTOR_API uint32_t raptor_abi_version(void);

/* The library's version string, e.g. "0.1.0".
 * Ownership: static storage owned by the library; never free it. */
RAPTOR_API const char* raptor_version(void);

/* ------------------------------------------------------------------------ */
/* Status codes and errors                                                  */
/* ------------------------------------------------------------------------ */

typedef int32_t raptor_status_t;

enum {
  RAPTOR_OK = 0,
  RAPTOR_ERR_INVALID_ARGUMENT = 1,   /* a bad argument: NULL pointer, bad enum, bad struct_size, bad cu_seqlens */
  RAPTOR_ERR_OUT_OF_RANGE = 2,       /* token id >= vocab, sequence longer than the model allows, size too large */
  RAPTOR_ERR_BUFFER_TOO_SMALL = 3,   /* a caller-provided output buffer is too small */
  RAPTOR_ERR_INVALID_HANDLE = 4,     /* NULL, freed or foreign handle */
  RAPTOR_ERR_IO = 5,                 /* a file could not be opened or read */
  RAPTOR_ERR_INVALID_MODEL = 6,      /* a model file is malformed, corrupt, or fails its checksum */
  RAPTOR_ERR_UNSUPPORTED = 7,        /* valid, but not supported by this build or backend */
  RAPTOR_ERR_BACKEND_UNAVAILABLE = 8,/* the requested backend cannot be used on this machine */
  RAPTOR_ERR_OUT_OF_MEMORY = 9,      /* host or device memory exhausted; the engine stays usable */
  RAPTOR_ERR_BUSY = 10,              /* the request queue is full; retry later */
  RAPTOR_ERR_DEADLINE_EXCEEDED = 11, /* the request's deadline passed before it completed */
  RAPTOR_ERR_CANCELLED = 12,         /* the request was cancelled */
  RAPTOR_ERR_SHUTDOWN = 13,          /* the engine is shutting down or was freed */
  RAPTOR_ERR_DEVICE_FAILED = 14,     /* the device hit an unrecoverable fault; this engine is failed */
  RAPTOR_ERR_INTERNAL = 15,          /* a bug in raptor; the call failed, the process is intact */
  RAPTOR_ERR_TIMEOUT = 16            /* a wait timed out; the request is still running */
};

/* A short constant name for a status code, e.g. "INVALID_ARGUMENT".
 * Ownership: static storage owned by the library; never free it. */
RAPTOR_API const char* raptor_status_name(raptor_status_t status);

/* The message of the last failing raptor call on the calling thread, or ""
 * if none failed yet. Successful calls do not clear it.
 * Ownership: owned by the library, valid on this thread until its next
 * failing raptor call; copy it to keep it. */
RAPTOR_API const char* raptor_last_error(void);

/* ------------------------------------------------------------------------ */
/* Logging                                                                  */
/* ------------------------------------------------------------------------ */

enum {
  RAPTOR_LOG_DEBUG = 0,
  RAPTOR_LOG_INFO = 1,
  RAPTOR_LOG_WARN = 2,
  RAPTOR_LOG_ERROR = 3
};

/* Receives one log line (without trailing newline). May be called from any
 * thread, concurrently; it must not block for long.
 * Ownership: `msg` is valid only during the call. */
typedef void (*raptor_log_fn)(int32_t level, const char* msg, void* user_data);

/* Sends the library's log messages at `min_level` and above to `fn` (process-
 * wide). fn == NULL restores the default: lines to stderr.
 * Ownership: user_data is passed back untouched; the caller keeps it alive
 * until the callback is replaced. */
RAPTOR_API raptor_status_t raptor_set_log_callback(raptor_log_fn fn, int32_t min_level,
                                                   void* user_data);

/* ------------------------------------------------------------------------ */
/* Engine                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct raptor_engine raptor_engine_t; /* opaque */

enum {
  RAPTOR_BACKEND_AUTO = 0, /* CUDA when a usable GPU is found, CPU otherwise (logged once) */
  RAPTOR_BACKEND_CPU = 1,
  RAPTOR_BACKEND_CUDA = 2  /* an error (BACKEND_UNAVAILABLE) when no usable GPU is found */
};

/* Element types, for compute precision and for outputs. */
enum {
  RAPTOR_DTYPE_FP32 = 0,
  RAPTOR_DTYPE_FP16 = 1,
  RAPTOR_DTYPE_BF16 = 2
};

typedef struct raptor_engine_options {
  size_t struct_size;         /* sizeof(raptor_engine_options_t); set by the default filler */
  int32_t backend;            /* RAPTOR_BACKEND_*; default AUTO */
  int32_t device;             /* GPU ordinal; default 0 */
  int32_t compute_dtype;      /* RAPTOR_DTYPE_*; default FP16 (the CPU backend always computes in fp32) */
  int32_t worker_threads;     /* CPU threads; 0 = all cores (default) */
  int64_t max_batch_tokens;   /* token budget of one batch; default 16384. The scheduler merges
                                 asynchronous requests of one model into one packed batch and closes
                                 it at this budget or at max_queue_delay_us, whichever comes first
                                 (a single larger request runs alone) */
  int64_t max_queue_delay_us; /* how long a submitted request may wait for its batch to fill; default 2000 */
  int64_t queue_capacity;     /* pending asynchronous requests before submit returns BUSY; default 1024 */
  uint64_t seed;              /* engine seed of the block-sparse plan's random blocks; default 0 */
  const char* kernel_cache_dir; /* GPU kernel cache; NULL = the user cache dir. Copied at create. */
  /* Appended (several GPUs in one process). A host built against an older
   * header passes the older sizeof, RAPTOR_ENGINE_OPTIONS_V1_SIZE, and gets
   * one device: `device`. With several devices the engine opens one device
   * worker per GPU, loads every model's weights once on each, and sends each
   * batch to the healthy device with the least outstanding work (see
   * "Several devices" below). At most RAPTOR_MAX_DEVICES devices. */
  const int32_t* devices;     /* NULL (default): the one `device`; else num_devices distinct GPU
                                 ordinals in [0, RAPTOR_MAX_DEVICES). An empty list (num_devices 0),
                                 a repeated or negative ordinal: RAPTOR_ERR_INVALID_ARGUMENT; an
                                 ordinal the machine does not have: RAPTOR_ERR_OUT_OF_RANGE (the
                                 CPU backend treats each listed ordinal as one CPU replica sharing
                                 worker_threads, a development aid). Copied at create. */
  size_t num_devices;         /* entries of devices; must be 0 when devices is NULL */
  int32_t all_devices;        /* nonzero: every GPU the driver lists (the CPU backend is one
                                 device); excludes `devices`. Default 0 */
} raptor_engine_options_t;

/* The size of raptor_engine_options_t before the device list was appended;
 * the library accepts it as struct_size, and the current sizeof. */
#define RAPTOR_ENGINE_OPTIONS_V1_SIZE offsetof(raptor_engine_options_t, devices)

/* The most devices one engine serves on (and the bound of an ordinal). */
#define RAPTOR_MAX_DEVICES 64

/* Fills the ABI v1 fields of *opts (RAPTOR_ENGINE_OPTIONS_V1_SIZE bytes:
 * safe for a host built against any header) with the defaults and sets
 * opts->struct_size to RAPTOR_ENGINE_OPTIONS_V1_SIZE. To use the appended
 * fields (devices, all_devices), call raptor_engine_options_init(opts,
 * sizeof *opts) instead. NULL is ignored. */
RAPTOR_API void raptor_engine_options_default(raptor_engine_options_t* opts);

/* Creates an engine. opts == NULL means the defaults.
 * Ownership: *out is owned by the caller; release it with raptor_engine_free.
 * opts and its strings are copied; the caller keeps ownership of them. */
RAPTOR_API raptor_status_t raptor_engine_create(const raptor_engine_options_t* opts,
                                                raptor_engine_t** out);

/* Frees an engine, its models and its requests. Pending requests complete
 * with RAPTOR_ERR_SHUTDOWN (their callbacks run) before this returns.
 * Must not be called from a completion callback. NULL is ignored. */
RAPTOR_API void raptor_engine_free(raptor_engine_t* engine);

/* The backend the engine runs on: "cpu" or "cuda".
 * Ownership: static storage owned by the library. Returns "" for a bad handle. */
RAPTOR_API const char* raptor_engine_backend(const raptor_engine_t* engine);

/* Slots of the per-status arrays of raptor_engine_stats_t, indexed by
 * raptor_status_t (room for codes added later). */
#define RAPTOR_STATUS_SLOTS 32

typedef struct raptor_engine_stats {
  size_t struct_size;            /* set by the caller: sizeof(raptor_engine_stats_t), or
                                    RAPTOR_ENGINE_STATS_V1_SIZE for the v1 fields only */
  uint64_t requests_submitted;   /* asynchronous submits accepted */
  uint64_t requests_completed;   /* requests that completed with RAPTOR_OK (sync and async) */
  uint64_t requests_failed;      /* requests that completed with an error other than CANCELLED */
  uint64_t requests_cancelled;   /* requests that completed with RAPTOR_ERR_CANCELLED */
  uint64_t batches;              /* batches run by the backend */
  uint64_t tokens;               /* tokens encoded */
  int64_t queue_depth;           /* requests waiting now */
  int64_t live_models;           /* models of this engine not yet freed */
  int64_t live_requests;         /* request handles of this engine not yet freed */
  int64_t process_handles;       /* live raptor handles of any kind in the process */
  int64_t process_goroutines;    /* Go runtime goroutines in the process */
  int64_t process_heap_bytes;    /* Go heap in use, bytes */
  /* Appended (scheduler). A host built against an older header passes the
   * older sizeof, RAPTOR_ENGINE_STATS_V1_SIZE, and gets the fields above only.
   * Latency quantiles cover every asynchronous request since the engine was
   * created (a log-linear histogram: within 3%); rates cover the last 10 s. */
  int64_t queue_latency_p50_us;  /* submit to the start of the request's batch */
  int64_t queue_latency_p99_us;
  int64_t latency_p50_us;        /* submit to completion, successful asynchronous requests */
  int64_t latency_p99_us;
  uint64_t scheduler_batches;    /* batches the scheduler formed */
  uint64_t scheduler_requests;   /* requests in those batches */
  double mean_batch_requests;    /* scheduler_requests / scheduler_batches */
  double mean_batch_fill;        /* mean tokens per scheduler batch / max_batch_tokens */
  uint64_t padded_tokens;        /* padding tokens computed: none from packing; on the CUDA
                                    backend a batch of <= RAPTOR_CUDA_GRAPHS tokens (default
                                    8192 for models up to 512 wide, else 4096) and <= 1/16 as
                                    many sequences runs padded to a token-count class (<= 12.5%
                                    above 64 tokens) as a CUDA graph; 0 with
                                    RAPTOR_CUDA_GRAPHS=0 */
  double padding_ratio;          /* padded_tokens / (tokens + padded_tokens) */
  double tokens_per_second;      /* tokens encoded per second over the last 10 s */
  double device_busy_share;      /* share of the last 10 s with a batch computing, 0..1 */
  int64_t device_busy_us;        /* time with a batch computing, since the engine was created */
  int64_t uptime_us;             /* time since the engine was created */
  int64_t queue_capacity;        /* the engine's queue_capacity */
  uint64_t completed_by_status[RAPTOR_STATUS_SLOTS]; /* requests (sync and async) completed, by final status */
  uint64_t rejected_by_status[RAPTOR_STATUS_SLOTS];  /* asynchronous submits refused (nothing queued), by status */
} raptor_engine_stats_t;

/* The size of raptor_engine_stats_t before the scheduler's fields were
 * appended; the library accepts it as struct_size, and the current sizeof. */
#define RAPTOR_ENGINE_STATS_V1_SIZE offsetof(raptor_engine_stats_t, queue_latency_p50_us)

/* Fills *stats (whose struct_size the caller sets). */
RAPTOR_API raptor_status_t raptor_engine_get_stats(const raptor_engine_t* engine,
                                                   raptor_engine_stats_t* stats);

/* ------------------------------------------------------------------------ */
/* Models                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct raptor_model raptor_model_t; /* opaque */

/* Loads a raptor model file (see `raptor convert`). The file is validated
 * (structure, shapes, checksums) before use.
 * Ownership: *out is owned by the caller; release it with raptor_model_free
 * (raptor_engine_free also releases it). `path` is not retained. */
RAPTOR_API raptor_status_t raptor_model_load(raptor_engine_t* engine, const char* path,
                                             raptor_model_t** out);

/* Loads a model from a file image in memory.
 * Ownership: the library copies what it needs before returning; the caller
 * may free `data` afterwards. */
RAPTOR_API raptor_status_t raptor_model_load_from_memory(raptor_engine_t* engine,
                                                         const void* data, size_t size,
                                                         raptor_model_t** out);

/* Frees a model. Its pending requests complete with RAPTOR_ERR_SHUTDOWN first.
 * Must not be called from a completion callback. NULL is ignored. */
RAPTOR_API void raptor_model_free(raptor_model_t* model);

enum { RAPTOR_FAMILY_BERT = 0, RAPTOR_FAMILY_ROBERTA = 1, RAPTOR_FAMILY_BIGBIRD = 2 };
enum { RAPTOR_ACTIVATION_GELU = 0, RAPTOR_ACTIVATION_GELU_TANH = 1 };
enum { RAPTOR_ATTENTION_DENSE = 0, RAPTOR_ATTENTION_BLOCK_SPARSE = 1 };

typedef struct raptor_model_info {
  size_t struct_size;        /* set by the caller: sizeof(raptor_model_info_t) */
  int32_t family;            /* RAPTOR_FAMILY_* */
  int32_t vocab_size;
  int32_t hidden_size;
  int32_t num_layers;
  int32_t num_heads;
  int32_t intermediate_size;
  int32_t max_positions;     /* position-embedding rows */
  int32_t max_sequence_length; /* longest sequence accepted: max_positions - position_offset */
  int32_t type_vocab_size;
  int32_t activation;        /* RAPTOR_ACTIVATION_* */
  int32_t attention;         /* RAPTOR_ATTENTION_* */
  int32_t block_size;        /* block-sparse only */
  int32_t random_blocks;     /* block-sparse only */
  int32_t position_offset;   /* first position id (RoBERTa: padding_idx + 1) */
  int32_t pad_token_id;
  int32_t weight_dtype;      /* RAPTOR_DTYPE_* the file stores */
  int32_t has_pooler;        /* nonzero if the file has BERT's pooler */
  int32_t has_tokenizer;     /* nonzero if the file carries a WordPiece vocabulary */
  float layer_norm_eps;
  /* Appended (task heads). A host built against an older header passes the
   * older sizeof, RAPTOR_MODEL_INFO_V1_SIZE, and gets the fields above only. */
  int32_t head_kind;         /* RAPTOR_HEAD_*; RAPTOR_HEAD_NONE for a bare encoder */
  int32_t num_labels;        /* logits per row (2 for question answering); 0 without a head */
} raptor_model_info_t;

/* Fills *info (whose struct_size the caller sets) with the model's config. */
RAPTOR_API raptor_status_t raptor_model_get_info(const raptor_model_t* model,
                                                 raptor_model_info_t* info);

/* Tokenizes UTF-8 text with the model's WordPiece vocabulary: lower-casing and
 * accent stripping as the model was trained, [CLS] first and [SEP] last,
 * truncated to max_tokens (0 = the model's max_sequence_length).
 * Writes the ids to ids[0 .. *n_ids). Size query: with ids == NULL and
 * capacity == 0 it only sets *n_ids. A too small capacity gives
 * RAPTOR_ERR_BUFFER_TOO_SMALL. A model without a vocabulary gives
 * RAPTOR_ERR_UNSUPPORTED.
 * Ownership: text and ids stay the caller's; nothing is retained. */
RAPTOR_API raptor_status_t raptor_model_tokenize(const raptor_model_t* model, const char* text,
                                                 size_t text_len, int32_t max_tokens,
                                                 int32_t* ids, size_t capacity, size_t* n_ids);

/* ------------------------------------------------------------------------ */
/* Batches and outputs                                                      */
/* ------------------------------------------------------------------------ */

/* A packed batch: the token ids of all sequences back to back, no padding.
 * Sequence s is token_ids[cu_seqlens[s] .. cu_seqlens[s+1]).
 * cu_seqlens[0] == 0, strictly increasing (no empty sequence), and
 * cu_seqlens[num_seqs] == num_tokens. */
typedef struct raptor_batch {
  size_t struct_size;             /* sizeof(raptor_batch_t); set by the default filler */
  const int32_t* token_ids;       /* [num_tokens], each in [0, vocab_size) */
  size_t num_tokens;
  const int32_t* cu_seqlens;      /* [num_seqs + 1] */
  size_t num_seqs;
  const int32_t* token_type_ids;  /* NULL (all 0) or [num_tokens], each in [0, type_vocab_size) */
  const uint64_t* seeds;          /* NULL (all 0) or [num_seqs]: per-request seeds of the sparse plan */
} raptor_batch_t;

/* Zeroes *batch and sets batch->struct_size. NULL is ignored. */
RAPTOR_API void raptor_batch_default(raptor_batch_t* batch);

enum { RAPTOR_MEMORY_HOST = 0, RAPTOR_MEMORY_DEVICE = 1 };
enum {
  RAPTOR_POOLING_CLS = 0,
  RAPTOR_POOLING_MEAN = 1,
  RAPTOR_POOLING_POOLER = 2 /* appended: BERT's pooler_output, tanh(W h_CLS + b); needs a model with
                               has_pooler (else RAPTOR_ERR_INVALID_ARGUMENT) */
};

/* Where results go. Each of hidden/pooled may be NULL (not computed).
 * hidden: [num_tokens, hidden_size] row-major, packed like the input.
 * pooled: [num_seqs, hidden_size]: the first token (CLS) or the mean over the
 * sequence's tokens (MEAN, as sentence-transformers does), optionally
 * L2-normalised. */
typedef struct raptor_output {
  size_t struct_size;  /* sizeof(raptor_output_t); set by the default filler */
  int32_t memory;      /* RAPTOR_MEMORY_HOST; RAPTOR_MEMORY_DEVICE: hidden/pooled are device
                          pointers (CUdeviceptr) of the engine's GPU, written by the GPU with
                          FP32 only, by raptor_encode before it returns and by raptor_submit
                          before completion; a CPU engine, FP16 or logits with DEVICE give
                          RAPTOR_ERR_UNSUPPORTED. The sizes are checked as for host memory;
                          the pointers themselves cannot be, the caller vouches for them */
  int32_t dtype;       /* RAPTOR_DTYPE_FP32 (default) or RAPTOR_DTYPE_FP16 (host memory only) */
  void* hidden;        /* NULL, or hidden_bytes >= num_tokens * hidden_size * element size */
  size_t hidden_bytes;
  void* pooled;        /* NULL, or pooled_bytes >= num_seqs * hidden_size * element size */
  size_t pooled_bytes;
  int32_t pooling;     /* RAPTOR_POOLING_*; default MEAN */
  int32_t normalize;   /* nonzero: L2-normalise pooled vectors; default 0 */
  /* Appended (task heads). A host built against an older header passes the
   * older sizeof, RAPTOR_OUTPUT_V1_SIZE, and cannot ask for logits.
   * logits: NULL, or logits_bytes >= rows * cols * 4: always FP32 whatever
   * `dtype` says (question-answering logits reach -1e6, beyond fp16), host
   * memory only, row-major [rows, cols] as raptor_model_logits_shape gives.
   * A model without a task head gives RAPTOR_ERR_UNSUPPORTED. The head runs
   * on the host from the last hidden states, whatever the backend. */
  void* logits;
  size_t logits_bytes;
} raptor_output_t;

/* Zeroes the ABI v1 fields of *out (RAPTOR_OUTPUT_V1_SIZE bytes: safe for a
 * host built against any header), sets out->struct_size to
 * RAPTOR_OUTPUT_V1_SIZE, dtype FP32, memory HOST, pooling MEAN. To use the
 * appended fields (logits), call raptor_output_init(out, sizeof *out)
 * instead. NULL is ignored. */
RAPTOR_API void raptor_output_default(raptor_output_t* out);

/* ------------------------------------------------------------------------ */
/* Encoding                                                                 */
/* ------------------------------------------------------------------------ */

/* Encodes a packed batch synchronously and writes the requested outputs.
 * Ownership: batch and output buffers stay the caller's; nothing is retained
 * after return. On error the output buffers' contents are unspecified. */
RAPTOR_API raptor_status_t raptor_encode(raptor_model_t* model, const raptor_batch_t* batch,
                                         const raptor_output_t* output);

typedef struct raptor_request raptor_request_t; /* opaque */

/* Called exactly once when an asynchronous request completes, on a library
 * thread. It may call any raptor function except raptor_engine_free,
 * raptor_model_free and raptor_engine_shutdown (including raptor_submit, and
 * raptor_request_free on `req`). raptor_last_error() there is not the
 * request's message: use raptor_request_error(req). A callback must not wait
 * for other requests (raptor_request_wait on another request, or a lock whose
 * holder waits for one): callbacks run on a few delivery threads, and once
 * every one of them is inside a callback no other request can complete, so
 * such a wait can deadlock. */
typedef void (*raptor_completion_fn)(raptor_request_t* req, raptor_status_t status,
                                     void* user_data);

/* Submits a batch for asynchronous encoding and returns at once.
 * The batch (ids, cu_seqlens, types, seeds) is copied before this returns.
 * `done` may be NULL: then use raptor_request_wait / raptor_request_poll.
 * When the queue is full, returns RAPTOR_ERR_BUSY and nothing is queued.
 * Ownership: *out_req is owned by the caller; release it with
 * raptor_request_free (before or after completion). The output buffers must
 * stay valid and untouched until the request completes. */
RAPTOR_API raptor_status_t raptor_submit(raptor_model_t* model, const raptor_batch_t* batch,
                                         const raptor_output_t* output,
                                         raptor_completion_fn done, void* user_data,
                                         raptor_request_t** out_req);

/* Sets *done to 1 if the request completed (then *result, if not NULL, is its
 * status) and to 0 otherwise. Never blocks. */
RAPTOR_API raptor_status_t raptor_request_poll(raptor_request_t* req, int32_t* done,
                                               raptor_status_t* result);

/* Waits for the request to complete, at most timeout_us microseconds
 * (negative = no limit). Returns RAPTOR_OK and sets *result (if not NULL) to
 * the request's status when it completed, or RAPTOR_ERR_TIMEOUT. */
RAPTOR_API raptor_status_t raptor_request_wait(raptor_request_t* req, int64_t timeout_us,
                                               raptor_status_t* result);

/* Asks to cancel the request. If its results have not started being
 * delivered (it is queued, waiting in a batch, or its batch is computing), it
 * completes at once with RAPTOR_ERR_CANCELLED (its callback runs on a library
 * thread) and its output buffers are not written; a batch left with no
 * request stops after its current layer. Cancelling a completed request, or
 * one being delivered, does nothing and returns OK. */
RAPTOR_API raptor_status_t raptor_request_cancel(raptor_request_t* req);

/* The message of a failed request, "" if it succeeded or is pending.
 * Ownership: owned by the request; valid until raptor_request_free. */
RAPTOR_API const char* raptor_request_error(raptor_request_t* req);

/* Frees a request handle. A pending request is cancelled; its callback, if
 * any, still runs exactly once. NULL is ignored. */
RAPTOR_API void raptor_request_free(raptor_request_t* req);

/* ------------------------------------------------------------------------ */
/* Task heads (appended)                                                    */
/* ------------------------------------------------------------------------ */

/* The sizes of raptor_model_info_t and raptor_output_t before the head
 * fields were appended (LP64 and ILP32 alike); the library accepts them as
 * struct_size, and the current sizeof. */
#define RAPTOR_MODEL_INFO_V1_SIZE (sizeof(size_t) == 8 ? 88u : 80u)
#define RAPTOR_OUTPUT_V1_SIZE (sizeof(size_t) == 8 ? 56u : 36u)

/* The task a model's head computes (raptor_model_info_t.head_kind), from the
 * HF *For* checkpoint it was converted from. Logits shapes:
 *   SEQUENCE_CLASSIFICATION  [num_seqs, num_labels], from each sequence's first token
 *   TOKEN_CLASSIFICATION     [num_tokens, num_labels], packed like the input
 *   QUESTION_ANSWERING       [num_tokens, 2]: start logit, end logit */
enum {
  RAPTOR_HEAD_NONE = 0,
  RAPTOR_HEAD_SEQUENCE_CLASSIFICATION = 1,
  RAPTOR_HEAD_TOKEN_CLASSIFICATION = 2,
  RAPTOR_HEAD_QUESTION_ANSWERING = 3
};

/* As raptor_output_default, then zeroes the fields appended since and sets
 * out->struct_size = struct_size, which must be RAPTOR_OUTPUT_V1_SIZE or
 * sizeof(raptor_output_t) (anything else: *out is left untouched).
 * NULL is ignored. */
RAPTOR_API void raptor_output_init(raptor_output_t* out, size_t struct_size);

/* Sets *rows and *cols to the shape of the logits of `batch` (validated as
 * raptor_encode does): the buffer needs rows * cols * 4 bytes. A model
 * without a head gives RAPTOR_ERR_UNSUPPORTED. */
RAPTOR_API raptor_status_t raptor_model_logits_shape(const raptor_model_t* model,
                                                     const raptor_batch_t* batch,
                                                     int64_t* rows, int64_t* cols);

/* Copies the name of label `id` (config.json's id2label) into buf as UTF-8
 * with a terminating NUL, and sets *len to its length without the NUL.
 * Size query: with buf == NULL and cap == 0 it only sets *len. A cap below
 * the length + 1 gives RAPTOR_ERR_BUFFER_TOO_SMALL. A model whose file
 * has no label names gives "LABEL_<id>", as HF does; a model without a head
 * gives RAPTOR_ERR_UNSUPPORTED; id outside [0, num_labels) gives
 * RAPTOR_ERR_OUT_OF_RANGE.
 * Ownership: buf stays the caller's; nothing is retained. */
RAPTOR_API raptor_status_t raptor_model_label(const raptor_model_t* model, int32_t id,
                                              char* buf, size_t cap, size_t* len);

/* ------------------------------------------------------------------------ */
/* Scheduling, deadlines, shutdown and metrics (appended)                   */
/* ------------------------------------------------------------------------ */

/* How asynchronous requests are served. The engine merges requests of one
 * model into packed batches (their sequences back to back, no padding) and
 * scatters the results back: a request's outputs are bit-identical to
 * raptor_encode of the request alone on the CPU backend (within rounding on
 * the GPU). A batch closes at max_batch_tokens or max_queue_delay_us,
 * whichever comes first. Requests are ranked by priority (higher first), then
 * by deadline (earliest first; a request without a deadline counts as due 1 s
 * after its submit), then by arrival; a batch groups similar lengths, and no
 * request joins a batch that would make another member miss its deadline.
 * Batches are packed while earlier ones compute, and results are delivered
 * while later ones compute. */

typedef struct raptor_submit_options {
  size_t struct_size;       /* sizeof(raptor_submit_options_t); set by raptor_submit_options_default */
  int32_t priority;         /* higher runs first (strict priority: a steady stream of higher-priority
                               requests can starve lower ones); default 0 */
  int64_t deadline_us;      /* relative: microseconds after the submit call by which the request must
                               complete, else it completes with RAPTOR_ERR_DEADLINE_EXCEEDED as soon
                               as the deadline passes (unless its results are being delivered);
                               0 = no deadline (default); negative: RAPTOR_ERR_INVALID_ARGUMENT */
  int64_t block_timeout_us; /* when the queue is full: 0 = return RAPTOR_ERR_BUSY at once (default);
                               > 0 = wait up to this long for space, then BUSY; negative = wait
                               without limit (RAPTOR_ERR_SHUTDOWN if the engine shuts down). Inside a
                               completion callback a full queue answers BUSY at once whatever this
                               says (a callback that waits there could stop the queue draining). */
} raptor_submit_options_t;

/* Fills *opts with the defaults (priority 0, no deadline, no blocking) and
 * sets opts->struct_size. NULL is ignored. */
RAPTOR_API void raptor_submit_options_default(raptor_submit_options_t* opts);

/* raptor_submit with options: priority, deadline, blocking on a full queue.
 * options == NULL means the defaults (then it is raptor_submit). Everything
 * else is as raptor_submit: the batch is copied, the output buffers must stay
 * valid until completion, `done` runs exactly once for an accepted request.
 * Errors (nothing is queued, out_req untouched): those of raptor_submit, and
 * RAPTOR_ERR_INVALID_ARGUMENT for a bad options struct_size or a negative
 * deadline_us, RAPTOR_ERR_OUT_OF_RANGE for a deadline_us or block_timeout_us
 * beyond 100 days, RAPTOR_ERR_BUSY when the queue stayed full for
 * block_timeout_us, RAPTOR_ERR_DEADLINE_EXCEEDED when the deadline passed
 * before the request could be queued (while it waited for space),
 * RAPTOR_ERR_SHUTDOWN once raptor_engine_shutdown started.
 * A sequence longer than the model's max_sequence_length gives
 * RAPTOR_ERR_OUT_OF_RANGE here, never a truncation.
 * Ownership: options is read during the call only. */
RAPTOR_API raptor_status_t raptor_submit_with_options(raptor_model_t* model, const raptor_batch_t* batch,
                                                      const raptor_output_t* output,
                                                      const raptor_submit_options_t* options,
                                                      raptor_completion_fn done, void* user_data,
                                                      raptor_request_t** out_req);

enum {
  RAPTOR_SHUTDOWN_DRAIN = 0, /* queued and running requests complete normally, up to the timeout */
  RAPTOR_SHUTDOWN_CANCEL = 1 /* pending requests complete with RAPTOR_ERR_SHUTDOWN at once */
};

/* Stops the engine's service. From the call on, raptor_submit*,
 * raptor_encode and model loads on this engine answer RAPTOR_ERR_SHUTDOWN.
 * DRAIN lets queued and running requests complete normally (batches close at
 * once, no queue delay) for up to timeout_us (negative = no limit); CANCEL
 * does not wait. Requests still pending then complete with
 * RAPTOR_ERR_SHUTDOWN (those whose results are being delivered complete
 * normally); every request gets its status and its callback. Returns once
 * every request has completed and its callback has returned: RAPTOR_OK, or
 * RAPTOR_ERR_TIMEOUT when the drain did not finish within timeout_us (the rest
 * then completed with SHUTDOWN). The engine handle stays valid for stats,
 * metrics, request queries and frees; release it with raptor_engine_free.
 * A later call waits for the first and returns RAPTOR_OK. Must not be called
 * from a completion or log callback (RAPTOR_ERR_INVALID_ARGUMENT). */
RAPTOR_API raptor_status_t raptor_engine_shutdown(raptor_engine_t* engine, int32_t mode, int64_t timeout_us);

/* Writes the engine's metrics in the Prometheus text exposition format
 * (version 0.0.4) into buf with a terminating NUL, and sets *len to its
 * length without the NUL. Size query: with buf == NULL and cap == 0 it only
 * sets *len. A cap below the length + 1 gives RAPTOR_ERR_BUFFER_TOO_SMALL;
 * counters grow between calls, so give some slack (1 KiB) or retry. The
 * metrics (all named raptor_*): requests submitted, completed by status,
 * submits rejected by status, queue depth and capacity, queue latency and
 * request latency (summaries with quantiles 0.5 and 0.99), batches,
 * scheduler batches and their requests, mean requests and fill per batch,
 * tokens, padded tokens and the padding ratio, tokens per second and
 * device busy share over the last 10 s, device busy seconds, uptime, live
 * models and requests.
 * Ownership: buf stays the caller's; nothing is retained. */
RAPTOR_API raptor_status_t raptor_engine_metrics_prometheus(const raptor_engine_t* engine, char* buf, size_t cap,
                                                            size_t* len);

/* ------------------------------------------------------------------------ */
/* Several devices (appended)                                               */
/* ------------------------------------------------------------------------ */

/* An engine created with raptor_engine_options_t.devices or all_devices
 * serves one model across several GPUs of this host from one process: one
 * device worker (and its compute lanes) per GPU, every model's weights
 * loaded once per GPU, and each batch sent to the healthy GPU with the least
 * outstanding work. Outputs do not depend on the GPU that computed them
 * (within rounding, as for batch composition). raptor_encode runs on the
 * least loaded healthy GPU. Device-memory outputs (RAPTOR_MEMORY_DEVICE) need
 * an engine on one device (else RAPTOR_ERR_UNSUPPORTED).
 *
 * Failures: a GPU that hits an unrecoverable fault is failed for good. Its
 * requests that had not started computing move to the other GPUs (each still
 * completes exactly once); those computing on it complete with
 * RAPTOR_ERR_DEVICE_FAILED (resubmit them); the other GPUs keep serving. Once
 * every GPU of the engine failed, every pending request and every new call
 * gets RAPTOR_ERR_DEVICE_FAILED. Going beyond one host is the model server's
 * job: run one raptor process per host behind the server's load balancer. */

typedef struct raptor_device_stats {
  size_t struct_size;           /* set by the caller: sizeof(raptor_device_stats_t) */
  int32_t index;                /* position in the engine's device list */
  int32_t ordinal;              /* GPU ordinal (a label for CPU replicas) */
  int32_t failed;               /* nonzero once the device failed: it takes no more work */
  int32_t busy_lanes;           /* asynchronous batches computing on it now */
  uint64_t batches;             /* asynchronous batches run on it */
  uint64_t requests;            /* requests in those batches */
  uint64_t tokens;              /* tokens of its successful batches */
  uint64_t requeued;            /* requests of batches formed for it that moved to other devices when it failed */
  uint64_t failed_in_flight;    /* requests computing on it when it failed (completed with DEVICE_FAILED) */
  double outstanding_cost;      /* cost of the batches on its lanes now: the load the scheduler balances */
  int64_t weight_bytes;         /* memory of the live models' weights on it (one copy per model) */
  int64_t memory_in_use_bytes;  /* device memory the engine's pool holds in live blocks (GPU; 0 on the CPU) */
  int64_t memory_cached_bytes;  /* device memory held in cached free blocks (GPU; 0 on the CPU) */
  int64_t memory_total_bytes;   /* the device's memory (GPU; 0 on the CPU) */
} raptor_device_stats_t;

/* As raptor_engine_options_default, then sets the fields appended since to
 * their defaults (devices NULL, num_devices 0, all_devices 0) and
 * opts->struct_size = struct_size, which must be RAPTOR_ENGINE_OPTIONS_V1_SIZE
 * or sizeof(raptor_engine_options_t) (anything else: *opts is left
 * untouched). NULL is ignored. */
RAPTOR_API void raptor_engine_options_init(raptor_engine_options_t* opts, size_t struct_size);

/* Sets *n to the number of devices the engine serves on (1 unless created
 * with a device list or all_devices). */
RAPTOR_API raptor_status_t raptor_engine_device_count(const raptor_engine_t* engine, int32_t* n);

/* Fills *stats (whose struct_size the caller sets) for device `index` in
 * [0, raptor_engine_device_count): RAPTOR_ERR_OUT_OF_RANGE outside it.
 * raptor_engine_metrics_prometheus reports the same per device, labelled
 * device="<index>",ordinal="<ordinal>". */
RAPTOR_API raptor_status_t raptor_engine_get_device_stats(const raptor_engine_t* engine, int32_t index,
                                                          raptor_device_stats_t* stats);

/* ------------------------------------------------------------------------ */
/* Warm-up (appended)                                                       */
/* ------------------------------------------------------------------------ */

/* What raptor_model_warmup prepares a model for: the largest batch and the
 * parts of a request that shape a batch's GPU kernels. */
typedef struct raptor_warmup_params {
  size_t struct_size;     /* sizeof(raptor_warmup_params_t); set by raptor_warmup_params_default */
  int64_t max_tokens;     /* the largest batch to prepare, in tokens (the scheduler merges requests up
                             to max_batch_tokens); 0 (default) = every batch size the engine replays as
                             a CUDA graph (RAPTOR_CUDA_GRAPHS; by default 8192 tokens for
                             models up to 512 wide, else 4096); negative:
                             RAPTOR_ERR_INVALID_ARGUMENT */
  int32_t token_type_ids; /* nonzero: the requests pass token_type_ids (default 0) */
  int32_t seeds;          /* nonzero: the requests pass seeds (default 0) */
  int32_t hidden;         /* nonzero: they ask for hidden states (host or device memory) or for logits
                             (computed from them) (default 0) */
  int32_t pooled;         /* nonzero: they ask for pooled vectors (default 1) */
  int32_t pooling;        /* RAPTOR_POOLING_* of the pooled vectors (default RAPTOR_POOLING_MEAN) */
  int32_t normalize;      /* nonzero: L2-normalised pooled vectors (default 0) */
} raptor_warmup_params_t;

/* Fills *params with the defaults (max_tokens 0, pooled mean vectors, no
 * token types, seeds or hidden states) and sets params->struct_size. NULL is
 * ignored. */
RAPTOR_API void raptor_warmup_params_default(raptor_warmup_params_t* params);

/* Prepares `model` for a stream of requests like *params, so that the first of
 * them do not pay one-time costs. On the GPU a batch of up to 8192 tokens (4096
 * for models wider than 512; RAPTOR_CUDA_GRAPHS sets it) runs as one of a few
 * hundred class shapes (its token count rounded up to one of eight steps per
 * power of two, its sequence count to a power of two; the padding is reported
 * as padded tokens): a class's first batch loads its kernels and GEMM plans,
 * its second captures a CUDA graph, later ones replay it. raptor_model_warmup
 * runs two batches of every class that such requests can make, and one batch
 * per cuBLASLt plan class (four per power of two) between the graph limit and
 * max_tokens (larger batches run eagerly and make their plans on their class's
 * first batch), on every device of the engine (a device that fails meanwhile is
 * skipped). max_tokens is not capped: pass the engine's max_batch_tokens (a
 * larger value runs batches that large). Measured on an H200 with all-
 * MiniLM-L6-v2 (bench/RESULTS.md, issue 8): 463 classes in 1.4 s (graph limit
 * 8192); without it, the first second of a request stream at a quarter of the
 * offline rate had a p99 latency of 11-19 ms, with it 1.3 ms. On the CPU it
 * runs one small batch per device. It blocks until done; requests submitted
 * meanwhile are served. Classes are told apart by the parameters too: warm up
 * once per kind of request served. A model keeps at most 512 graphs, in the
 * order they are captured (the default warm-up of all-MiniLM-L6-v2 takes 463):
 * later classes run eagerly. params == NULL means the defaults. On success
 * *out_batches (may be NULL) receives the number of batches run; on failure it
 * is left untouched.
 * Errors: RAPTOR_ERR_INVALID_HANDLE; RAPTOR_ERR_OUT_OF_RANGE for a max_tokens
 * above 2^31; RAPTOR_ERR_INVALID_ARGUMENT for a bad struct_size, a negative
 * max_tokens, neither hidden nor pooled, a bad pooling, or
 * RAPTOR_POOLING_POOLER on a model without a pooler; RAPTOR_ERR_SHUTDOWN once
 * raptor_engine_shutdown starts (a warm-up in progress stops at its next
 * batch); RAPTOR_ERR_INVALID_HANDLE when the model is freed meanwhile
 * (raptor_model_free waits for the batch in progress); RAPTOR_ERR_DEVICE_FAILED
 * when no device could be warmed; an encode's other device errors. */
RAPTOR_API raptor_status_t raptor_model_warmup(raptor_model_t* model, const raptor_warmup_params_t* params,
                                               int64_t* out_batches);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* RAPTOR_H */
