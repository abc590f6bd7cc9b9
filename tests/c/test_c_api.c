/*
 * A plain C test of every function of include/raptor.h: the happy paths
 * with real (tiny, random-weight) models, and the bad-input matrix. Every
 * failing call is checked for its documented status AND for a non-empty
 * raptor_last_error() that names the function.
 *
 * Usage: test_c_api MODEL_DIR  (or RAPTOR_TESTMODELS=MODEL_DIR test_c_api)
 * MODEL_DIR holds tiny-bert.raptor and tiny-bigbird.raptor, written by
 * `go run ./tests/tools/mkmodel`.
 *
 * The test writes only to stderr and checks that the library wrote nothing
 * to stdout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "raptor.h"
#include "test_check.h"
#include "test_time.h"

/* ------------------------------------------------------------------ checks */

/* CHECK, expect and EXPECT: test_check.h */

/* For void functions (the frees): the last error must now come from fn.
 * prime() first leaves a message from another function. */
static void prime(void) { (void)raptor_engine_get_stats(NULL, NULL); }

static void expect_void_error(const char* fn, const char* want_substr, int line) {
  atomic_fetch_add(&checks, 1);
  const char* msg = raptor_last_error();
  if (strncmp(msg, fn, strlen(fn)) != 0 || (want_substr && !strstr(msg, want_substr))) {
    fprintf(stderr, "line %d: after %s, last error is \"%s\", want a message from it%s%s\n", line, fn, msg,
            want_substr ? " containing " : "", want_substr ? want_substr : "");
    atomic_fetch_add(&failures, 1);
  }
}

/* ------------------------------------------------------------------ fixtures */

static char bert_path[4096], bigbird_path[4096], tmp_dir[4096];

/* The tiny models (tests/tools/mkmodel). */
enum { BERT_VOCAB = 79, BERT_HIDDEN = 32, BERT_MAXLEN = 128, BIGBIRD_VOCAB = 100, BIGBIRD_MAXLEN = 256, HIDDEN = 32 };

static unsigned char* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char* buf = malloc((size_t)n);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *size = (size_t)n;
  return buf;
}

static void write_file(const char* path, const void* data, size_t n) {
  FILE* f = fopen(path, "wb");
  CHECK(f != NULL);
  if (!f) return;
  CHECK(fwrite(data, 1, n, f) == n);
  fclose(f);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng_state >> 33) % n;
}

/* A packed batch of sequences of the given lengths with ids in [first, vocab). */
typedef struct {
  int32_t* ids;
  int32_t* cu;
  int32_t* types;
  uint64_t* seeds;
  size_t n, nseq;
  raptor_batch_t b;
} batch_t;

static void batch_make(batch_t* bt, const int* lens, size_t nseq, int vocab) {
  size_t n = 0;
  for (size_t i = 0; i < nseq; i++) n += (size_t)lens[i];
  bt->ids = malloc(n * sizeof(int32_t));
  bt->cu = malloc((nseq + 1) * sizeof(int32_t));
  bt->types = calloc(n, sizeof(int32_t));
  bt->seeds = calloc(nseq, sizeof(uint64_t));
  bt->n = n;
  bt->nseq = nseq;
  bt->cu[0] = 0;
  for (size_t i = 0; i < nseq; i++) bt->cu[i + 1] = bt->cu[i] + lens[i];
  for (size_t i = 0; i < n; i++) bt->ids[i] = 5 + (int32_t)rnd((uint32_t)vocab - 5);
  raptor_batch_default(&bt->b);
  bt->b.token_ids = bt->ids;
  bt->b.num_tokens = n;
  bt->b.cu_seqlens = bt->cu;
  bt->b.num_seqs = nseq;
}

static void batch_free(batch_t* bt) {
  free(bt->ids);
  free(bt->cu);
  free(bt->types);
  free(bt->seeds);
}

static raptor_output_t outputs(float* hidden, size_t hidden_floats, float* pooled, size_t pooled_floats) {
  raptor_output_t o;
  raptor_output_default(&o);
  o.hidden = hidden;
  o.hidden_bytes = hidden_floats * sizeof(float);
  o.pooled = pooled;
  o.pooled_bytes = pooled_floats * sizeof(float);
  return o;
}

/* An independent fp32 -> IEEE binary16 conversion, round to nearest even. */
static uint16_t f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;
  if (a >= 0x477ff000u) return sign | 0x7c00u;
  if (a < 0x38800000u) {
    float af;
    memcpy(&af, &a, 4);
    return sign | (uint16_t)nearbyintf(af * 16777216.0f);
  }
  a += 0xc8000fffu + ((a >> 13) & 1u);
  return sign | (uint16_t)(a >> 13);
}

static raptor_engine_t* new_engine(int64_t queue_capacity) {
  raptor_engine_options_t opts;
  raptor_engine_options_default(&opts);
  opts.backend = RAPTOR_BACKEND_CPU;
  if (queue_capacity > 0) opts.queue_capacity = queue_capacity;
  raptor_engine_t* e = NULL;
  EXPECT(RAPTOR_OK, raptor_engine_create, (&opts, &e));
  return e;
}

static raptor_model_t* load(raptor_engine_t* e, const char* path) {
  raptor_model_t* m = NULL;
  EXPECT(RAPTOR_OK, raptor_model_load, (e, path, &m));
  return m;
}

/* ------------------------------------------------------------------ versions, status names, last error */

static void* other_thread_error(void* arg) {
  (void)arg;
  /* A new thread has no last error, whatever other threads did. */
  CHECK(strcmp(raptor_last_error(), "") == 0);
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_engine_get_stats, (NULL, NULL));
  CHECK(strstr(raptor_last_error(), "NULL") != NULL);
  return NULL;
}

static void test_versions_and_errors(void) {
  CHECK(raptor_abi_version() == RAPTOR_ABI_VERSION);
  CHECK(raptor_version() != NULL && strlen(raptor_version()) > 0);

  static const char* names[] = {"OK", "INVALID_ARGUMENT", "OUT_OF_RANGE", "BUFFER_TOO_SMALL", "INVALID_HANDLE",
                                "IO", "INVALID_MODEL", "UNSUPPORTED", "BACKEND_UNAVAILABLE", "OUT_OF_MEMORY",
                                "BUSY", "DEADLINE_EXCEEDED", "CANCELLED", "SHUTDOWN", "DEVICE_FAILED",
                                "INTERNAL", "TIMEOUT"};
  for (int i = 0; i <= RAPTOR_ERR_TIMEOUT; i++) CHECK(strcmp(raptor_status_name(i), names[i]) == 0);
  CHECK(strcmp(raptor_status_name(-1), "UNKNOWN") == 0);
  CHECK(strcmp(raptor_status_name(17), "UNKNOWN") == 0);
  CHECK(RAPTOR_ERR_INVALID_ARGUMENT == 1 && RAPTOR_ERR_TIMEOUT == 16);

  /* The main thread's error is its own; successful calls keep it. */
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_model_get_info, (NULL, NULL));
  char mine[1024];
  snprintf(mine, sizeof mine, "%s", raptor_last_error());
  pthread_t t;
  pthread_create(&t, NULL, other_thread_error, NULL);
  pthread_join(t, NULL);
  CHECK(strcmp(raptor_last_error(), mine) == 0);
  CHECK(raptor_abi_version() == 1);
  CHECK(strcmp(raptor_last_error(), mine) == 0);
}

/* ------------------------------------------------------------------ logging */

typedef struct {
  pthread_mutex_t mu;
  int lines[4];
  int bad_level;
  int reentry_status; /* what raptor_set_log_callback answered from inside the callback */
  int try_reentry;
  raptor_engine_t* free_engine; /* if set, the callback tries to free it (refused) */
  int free_refused;
} log_capture;

static void log_cb(int32_t level, const char* msg, void* ud) {
  log_capture* c = ud;
  pthread_mutex_lock(&c->mu);
  if (level < 0 || level > 3 || msg == NULL || strchr(msg, '\n'))
    c->bad_level++;
  else
    c->lines[level]++;
  int reenter = c->try_reentry;
  c->try_reentry = 0;
  raptor_engine_t* victim = c->free_engine;
  c->free_engine = NULL;
  pthread_mutex_unlock(&c->mu);
  if (victim) {
    raptor_engine_free(victim);
    int refused = strncmp(raptor_last_error(), "raptor_engine_free", 18) == 0 &&
                  strstr(raptor_last_error(), "log callback") != NULL;
    pthread_mutex_lock(&c->mu);
    c->free_refused += refused;
    pthread_mutex_unlock(&c->mu);
  }
  if (reenter) {
    int st = raptor_set_log_callback(NULL, RAPTOR_LOG_INFO, NULL);
    pthread_mutex_lock(&c->mu);
    c->reentry_status = st;
    pthread_mutex_unlock(&c->mu);
  }
}

static void test_logging(void) {
  log_capture cap = {.mu = PTHREAD_MUTEX_INITIALIZER, .reentry_status = -1};
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_set_log_callback, (log_cb, 4, &cap));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_set_log_callback, (log_cb, -1, &cap));
  EXPECT(RAPTOR_OK, raptor_set_log_callback, (log_cb, RAPTOR_LOG_DEBUG, &cap));
  cap.try_reentry = 1;
  raptor_engine_t* e = new_engine(0);
  pthread_mutex_lock(&cap.mu);
  cap.free_engine = e; /* the model's "loaded" line tries to free the engine: refused */
  pthread_mutex_unlock(&cap.mu);
  raptor_model_t* m = load(e, bert_path);
  raptor_model_info_t info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  EXPECT(RAPTOR_OK, raptor_model_get_info, (m, &info)); /* the engine and model survived */
  raptor_model_free(m);
  raptor_engine_free(e);
  pthread_mutex_lock(&cap.mu);
  CHECK(cap.lines[RAPTOR_LOG_INFO] >= 2); /* engine ready, model loaded */
  CHECK(cap.bad_level == 0);
  CHECK(cap.reentry_status == RAPTOR_ERR_INVALID_ARGUMENT);
  CHECK(cap.free_refused == 1);
  pthread_mutex_unlock(&cap.mu);

  /* min_level filters. */
  log_capture quiet = {.mu = PTHREAD_MUTEX_INITIALIZER};
  EXPECT(RAPTOR_OK, raptor_set_log_callback, (log_cb, RAPTOR_LOG_ERROR, &quiet));
  e = new_engine(0);
  raptor_engine_free(e);
  CHECK(quiet.lines[RAPTOR_LOG_INFO] == 0 && quiet.lines[RAPTOR_LOG_DEBUG] == 0);

  /* Back to stderr, at WARN so the test output stays short. */
  EXPECT(RAPTOR_OK, raptor_set_log_callback, (NULL, RAPTOR_LOG_WARN, NULL));
}

/* ------------------------------------------------------------------ engine */

static void test_engine(void) {
  raptor_engine_options_t opts;
  memset(&opts, 0xab, sizeof opts);
  raptor_engine_options_default(&opts);
  CHECK(opts.struct_size == RAPTOR_ENGINE_OPTIONS_V1_SIZE); /* v1 fields; raptor_engine_options_init for the rest */
  CHECK(opts.backend == RAPTOR_BACKEND_AUTO && opts.device == 0 && opts.compute_dtype == RAPTOR_DTYPE_FP16);
  CHECK(opts.worker_threads == 0 && opts.max_batch_tokens == 16384 && opts.max_queue_delay_us == 2000);
  CHECK(opts.queue_capacity == 1024 && opts.seed == 0 && opts.kernel_cache_dir == NULL);
  raptor_engine_options_default(NULL); /* ignored */

  raptor_engine_t* e = NULL;
  EXPECT(RAPTOR_OK, raptor_engine_create, (NULL, &e)); /* NULL = defaults (AUTO: CPU here) */
  CHECK(e != NULL);
  CHECK(strcmp(raptor_engine_backend(e), "cpu") == 0 || strcmp(raptor_engine_backend(e), "cuda") == 0);
  raptor_engine_free(e);

  raptor_engine_t* const sentinel = (raptor_engine_t*)(uintptr_t)0x5e1;
  raptor_engine_t* out = sentinel;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_create, (&opts, NULL));

  /* An options struct of the wrong size: smaller, larger, zero. */
  size_t sizes[] = {sizeof opts - 8, sizeof opts + 8, 0, 4};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    raptor_engine_options_t o = opts;
    o.struct_size = sizes[i];
    EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_create, (&o, &out));
    CHECK(strstr(raptor_last_error(), "raptor_engine_options_t") != NULL);
    CHECK(out == sentinel); /* untouched on error */
  }

  /* Unknown backend and other bad fields. */
  raptor_engine_options_t o = opts;
  o.backend = 7;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_create, (&o, &out));
  CHECK(strstr(raptor_last_error(), "backend") != NULL);
  o = opts;
  o.backend = -1;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_create, (&o, &out));
  o = opts;
  o.compute_dtype = 3;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_create, (&o, &out));
  o = opts;
  o.worker_threads = -2;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_create, (&o, &out));
  o = opts;
  o.device = -1;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_create, (&o, &out));
  o = opts;
  o.queue_capacity = 0;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_create, (&o, &out));
  o = opts;
  o.max_batch_tokens = 0;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_create, (&o, &out));
  o = opts;
  o.max_queue_delay_us = -5;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_create, (&o, &out));
  CHECK(out == sentinel);

  /* CUDA: unavailable without a usable GPU; where there is one it works. */
  o = opts;
  o.backend = RAPTOR_BACKEND_CUDA;
  o.kernel_cache_dir = tmp_dir;
  raptor_status_t st = raptor_engine_create(&o, &out);
  if (st == RAPTOR_OK) {
    CHECK(strcmp(raptor_engine_backend(out), "cuda") == 0);
    raptor_engine_free(out);
    out = sentinel;
  } else {
    expect(st, RAPTOR_ERR_BACKEND_UNAVAILABLE, "raptor_engine_create", "raptor_engine_create(CUDA)", __LINE__);
    CHECK(out == sentinel);
  }

  /* Stats. */
  e = new_engine(0);
  raptor_engine_stats_t s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  EXPECT(RAPTOR_OK, raptor_engine_get_stats, (e, &s));
  CHECK(s.requests_submitted == 0 && s.requests_completed == 0 && s.batches == 0 && s.queue_depth == 0);
  CHECK(s.live_models == 0 && s.live_requests == 0 && s.process_handles >= 1);
  CHECK(s.process_goroutines > 0 && s.process_heap_bytes > 0);
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_get_stats, (e, NULL));
  s.struct_size = sizeof s - 8;
  s.requests_submitted = 777;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_get_stats, (e, &s));
  CHECK(strstr(raptor_last_error(), "raptor_engine_stats_t") != NULL);
  CHECK(s.requests_submitted == 777);
  s.struct_size = sizeof s;
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_engine_get_stats, (NULL, &s));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_engine_get_stats, ((raptor_engine_t*)&s, &s)); /* foreign */
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_engine_get_stats, ((raptor_engine_t*)(uintptr_t)1, &s));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_engine_get_stats, ((raptor_engine_t*)(uintptr_t)-1, &s));

  /* Backend name of bad handles: "" and a message. */
  prime();
  CHECK(strcmp(raptor_engine_backend(NULL), "") == 0);
  expect_void_error("raptor_engine_backend", "NULL", __LINE__);

  /* Freed handle. */
  raptor_engine_free(e);
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_engine_get_stats, (e, &s));
  CHECK(strstr(raptor_last_error(), "freed") != NULL);
  prime();
  CHECK(strcmp(raptor_engine_backend(e), "") == 0);
  expect_void_error("raptor_engine_backend", "freed", __LINE__);
  prime();
  raptor_engine_free(e); /* double free: detected, reported, harmless */
  expect_void_error("raptor_engine_free", "freed", __LINE__);
  prime();
  raptor_engine_free((raptor_engine_t*)&s); /* foreign */
  expect_void_error("raptor_engine_free", NULL, __LINE__);
  raptor_engine_free(NULL); /* NULL is ignored */
}

/* ------------------------------------------------------------------ models */

static void test_models(void) {
  raptor_engine_t* e = new_engine(0);
  raptor_model_t* const sentinel = (raptor_model_t*)(uintptr_t)0x5e1;
  raptor_model_t* m = sentinel;

  /* Bad arguments. */
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_model_load, (NULL, bert_path, &m));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_model_load, (e, NULL, &m));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_model_load, (e, bert_path, NULL));
  char missing[4200];
  snprintf(missing, sizeof missing, "%s/does-not-exist.raptor", tmp_dir);
  EXPECT(RAPTOR_ERR_IO, raptor_model_load, (e, missing, &m));
  EXPECT(RAPTOR_ERR_IO, raptor_model_load, (e, tmp_dir, &m)); /* a directory */
  CHECK(m == sentinel);

  /* Corrupt files: garbage, truncated, one flipped byte in the tensor data. */
  size_t size = 0;
  unsigned char* good = read_file(bert_path, &size);
  CHECK(good != NULL && size > 4096);
  char path[4200];
  snprintf(path, sizeof path, "%s/corrupt.raptor", tmp_dir);
  const char garbage[] = "this is not a raptor model file, just some text that is long enough to parse........";
  write_file(path, garbage, sizeof garbage);
  EXPECT(RAPTOR_ERR_INVALID_MODEL, raptor_model_load, (e, path, &m));
  write_file(path, good, size / 2);
  EXPECT(RAPTOR_ERR_INVALID_MODEL, raptor_model_load, (e, path, &m));
  unsigned char* flipped = malloc(size);
  memcpy(flipped, good, size);
  flipped[size - 1000] ^= 0x40;
  write_file(path, flipped, size);
  EXPECT(RAPTOR_ERR_INVALID_MODEL, raptor_model_load, (e, path, &m));
  write_file(path, "", 0);
  EXPECT(RAPTOR_ERR_INVALID_MODEL, raptor_model_load, (e, path, &m));
  CHECK(m == sentinel);

  /* From memory: copied, so the caller's buffer may go away at once. */
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_model_load_from_memory, (e, NULL, size, &m));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_model_load_from_memory, (e, good, 0, &m));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_model_load_from_memory, (e, good, size, NULL));
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_model_load_from_memory, (e, good, SIZE_MAX, &m));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_model_load_from_memory, (NULL, good, size, &m));
  EXPECT(RAPTOR_ERR_INVALID_MODEL, raptor_model_load_from_memory, (e, flipped, size, &m));
  EXPECT(RAPTOR_ERR_INVALID_MODEL, raptor_model_load_from_memory, (e, garbage, sizeof garbage, &m));
  EXPECT(RAPTOR_ERR_INVALID_MODEL, raptor_model_load_from_memory, (e, good, size - 1, &m));
  CHECK(m == sentinel);
  free(flipped);

  unsigned char* copy = malloc(size);
  memcpy(copy, good, size);
  raptor_model_t* mem = NULL;
  EXPECT(RAPTOR_OK, raptor_model_load_from_memory, (e, copy, size, &mem));
  memset(copy, 0, size);
  free(copy);
  m = load(e, bert_path);

  /* The same model from a file and from memory encodes identically. */
  batch_t bt;
  int lens[] = {7, 1, 20};
  batch_make(&bt, lens, 3, BERT_VOCAB);
  float h1[30 * HIDDEN], h2[30 * HIDDEN];
  raptor_output_t o1 = outputs(h1, 28 * HIDDEN, NULL, 0), o2 = outputs(h2, 28 * HIDDEN, NULL, 0);
  EXPECT(RAPTOR_OK, raptor_encode, (m, &bt.b, &o1));
  EXPECT(RAPTOR_OK, raptor_encode, (mem, &bt.b, &o2));
  CHECK(memcmp(h1, h2, 28 * HIDDEN * sizeof(float)) == 0);
  batch_free(&bt);

  /* Info. */
  raptor_model_info_t info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  EXPECT(RAPTOR_OK, raptor_model_get_info, (m, &info));
  CHECK(info.family == RAPTOR_FAMILY_BERT && info.vocab_size == BERT_VOCAB && info.hidden_size == BERT_HIDDEN);
  CHECK(info.num_layers == 2 && info.num_heads == 4 && info.intermediate_size == 64);
  CHECK(info.max_positions == 128 && info.max_sequence_length == BERT_MAXLEN && info.type_vocab_size == 2);
  CHECK(info.activation == RAPTOR_ACTIVATION_GELU && info.attention == RAPTOR_ATTENTION_DENSE);
  CHECK(info.position_offset == 0 && info.pad_token_id == 0 && info.weight_dtype == RAPTOR_DTYPE_FP32);
  CHECK(info.has_pooler == 1 && info.has_tokenizer == 1 && fabsf(info.layer_norm_eps - 1e-12f) < 1e-15f);
  raptor_model_t* bb = load(e, bigbird_path);
  EXPECT(RAPTOR_OK, raptor_model_get_info, (bb, &info));
  CHECK(info.family == RAPTOR_FAMILY_BIGBIRD && info.attention == RAPTOR_ATTENTION_BLOCK_SPARSE);
  CHECK(info.block_size == 8 && info.random_blocks == 1 && info.position_offset == 2);
  CHECK(info.max_sequence_length == BIGBIRD_MAXLEN && info.has_tokenizer == 0 && info.has_pooler == 0);
  CHECK(info.weight_dtype == RAPTOR_DTYPE_FP16 && info.activation == RAPTOR_ACTIVATION_GELU_TANH);
  info.struct_size = sizeof info + 4;
  info.vocab_size = -5;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_model_get_info, (m, &info));
  CHECK(strstr(raptor_last_error(), "raptor_model_info_t") != NULL);
  CHECK(info.vocab_size == -5);
  info.struct_size = sizeof info;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_model_get_info, (m, NULL));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_model_get_info, (NULL, &info));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_model_get_info, ((raptor_model_t*)e, &info)); /* an engine */
  CHECK(strstr(raptor_last_error(), "engine") != NULL);
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_engine_get_stats, ((raptor_engine_t*)m, NULL)); /* a model */

  /* Tokenize. */
  const char* text = "Hello, world! The quick brown fox jumps over the lazy dog.";
  size_t n = 0;
  EXPECT(RAPTOR_OK, raptor_model_tokenize, (m, text, strlen(text), 0, NULL, 0, &n)); /* size query */
  CHECK(n > 10);
  int32_t ids[256];
  size_t n2 = 0;
  EXPECT(RAPTOR_OK, raptor_model_tokenize, (m, text, strlen(text), 0, ids, 256, &n2));
  CHECK(n2 == n && ids[0] == 2 && ids[n - 1] == 3);
  for (size_t i = 0; i < n; i++) CHECK(ids[i] >= 0 && ids[i] < BERT_VOCAB);
  /* the ids encode */
  int32_t cu[2] = {0, (int32_t)n};
  raptor_batch_t b;
  raptor_batch_default(&b);
  b.token_ids = ids;
  b.num_tokens = n;
  b.cu_seqlens = cu;
  b.num_seqs = 1;
  float pooled[HIDDEN];
  raptor_output_t po = outputs(NULL, 0, pooled, HIDDEN);
  EXPECT(RAPTOR_OK, raptor_encode, (m, &b, &po));
  /* truncation keeps [SEP] last */
  EXPECT(RAPTOR_OK, raptor_model_tokenize, (m, text, strlen(text), 4, ids, 256, &n2));
  CHECK(n2 == 4 && ids[0] == 2 && ids[3] == 3);
  /* empty text: [CLS] [SEP]; NULL with length 0 is empty text */
  EXPECT(RAPTOR_OK, raptor_model_tokenize, (m, NULL, 0, 0, ids, 256, &n2));
  CHECK(n2 == 2);
  /* non-ASCII and invalid UTF-8 do not break it */
  const char* odd = "Caf\xc3\xa9 \xff\xfe na\xc3\xafve \xe4\xb8\xad";
  EXPECT(RAPTOR_OK, raptor_model_tokenize, (m, odd, strlen(odd), 0, ids, 256, &n2));
  size_t keep = 12345;
  n2 = keep;
  EXPECT(RAPTOR_ERR_BUFFER_TOO_SMALL, raptor_model_tokenize, (m, text, strlen(text), 0, ids, 3, &n2));
  CHECK(n2 == keep);
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_model_tokenize, (m, text, strlen(text), 0, ids, 256, NULL));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_model_tokenize, (m, NULL, 5, 0, ids, 256, &n2));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_model_tokenize, (m, text, strlen(text), 0, NULL, 256, &n2));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_model_tokenize, (m, text, strlen(text), 1, ids, 256, &n2));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_model_tokenize, (m, text, strlen(text), -3, ids, 256, &n2));
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_model_tokenize, (m, text, SIZE_MAX, 0, ids, 256, &n2));
  EXPECT(RAPTOR_ERR_UNSUPPORTED, raptor_model_tokenize, (bb, text, strlen(text), 0, ids, 256, &n2));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_model_tokenize, (NULL, text, strlen(text), 0, ids, 256, &n2));
  CHECK(n2 == keep);

  /* Free, then every use is INVALID_HANDLE. */
  raptor_engine_stats_t s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  EXPECT(RAPTOR_OK, raptor_engine_get_stats, (e, &s));
  CHECK(s.live_models == 3);
  raptor_model_free(m);
  raptor_model_free(mem);
  EXPECT(RAPTOR_OK, raptor_engine_get_stats, (e, &s));
  CHECK(s.live_models == 1);
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_model_get_info, (m, &info));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_encode, (m, &b, &po));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_model_tokenize, (m, text, strlen(text), 0, ids, 256, &n2));
  prime();
  raptor_model_free(m);
  expect_void_error("raptor_model_free", "freed", __LINE__);
  raptor_model_free(NULL);

  /* Freeing the engine frees its models. */
  raptor_engine_free(e);
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_model_get_info, (bb, &info));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_model_load, (e, bert_path, &m));
  prime();
  raptor_model_free(bb);
  expect_void_error("raptor_model_free", "freed", __LINE__);
  free(good);
}

/* ------------------------------------------------------------------ encode */

static void test_encode(void) {
  raptor_engine_t* e = new_engine(0);
  raptor_model_t* m = load(e, bert_path);
  raptor_model_t* bb = load(e, bigbird_path);

  batch_t bt;
  int lens[] = {5, 1, 17, 64};
  batch_make(&bt, lens, 4, BERT_VOCAB);
  const size_t T = bt.n, S = bt.nseq, H = HIDDEN;
  float* hidden = malloc(T * H * sizeof(float));
  float* pooled = malloc(S * H * sizeof(float));
  float* cls = malloc(S * H * sizeof(float));
  float* norm = malloc(S * H * sizeof(float));
  raptor_output_t o = outputs(hidden, T * H, pooled, S * H);
  EXPECT(RAPTOR_OK, raptor_encode, (m, &bt.b, &o));
  for (size_t i = 0; i < T * H; i++) CHECK(isfinite(hidden[i]));

  /* MEAN pooling is the mean of the sequence's rows. */
  for (size_t s = 0; s < S; s++)
    for (size_t j = 0; j < H; j++) {
      double acc = 0;
      for (int t = bt.cu[s]; t < bt.cu[s + 1]; t++) acc += hidden[(size_t)t * H + j];
      acc /= (bt.cu[s + 1] - bt.cu[s]);
      CHECK(fabs(acc - pooled[s * H + j]) <= 1e-5 * (1 + fabs(acc)));
    }
  /* CLS pooling is the first row; normalize gives unit vectors. */
  raptor_output_t oc = outputs(NULL, 0, cls, S * H);
  oc.pooling = RAPTOR_POOLING_CLS;
  EXPECT(RAPTOR_OK, raptor_encode, (m, &bt.b, &oc));
  for (size_t s = 0; s < S; s++) CHECK(memcmp(cls + s * H, hidden + (size_t)bt.cu[s] * H, H * sizeof(float)) == 0);
  raptor_output_t on = outputs(NULL, 0, norm, S * H);
  on.normalize = 1;
  EXPECT(RAPTOR_OK, raptor_encode, (m, &bt.b, &on));
  for (size_t s = 0; s < S; s++) {
    double ss = 0;
    for (size_t j = 0; j < H; j++) ss += (double)norm[s * H + j] * norm[s * H + j];
    CHECK(fabs(ss - 1) < 1e-5);
  }

  /* Batch invariance: each sequence alone gives the same bits. */
  for (size_t s = 0; s < S; s++) {
    int32_t cu1[2] = {0, bt.cu[s + 1] - bt.cu[s]};
    raptor_batch_t one;
    raptor_batch_default(&one);
    one.token_ids = bt.ids + bt.cu[s];
    one.num_tokens = (size_t)cu1[1];
    one.cu_seqlens = cu1;
    one.num_seqs = 1;
    float* h1 = malloc((size_t)cu1[1] * H * sizeof(float));
    float p1[HIDDEN];
    raptor_output_t o1 = outputs(h1, (size_t)cu1[1] * H, p1, H);
    EXPECT(RAPTOR_OK, raptor_encode, (m, &one, &o1));
    CHECK(memcmp(h1, hidden + (size_t)bt.cu[s] * H, (size_t)cu1[1] * H * sizeof(float)) == 0);
    CHECK(memcmp(p1, pooled + s * H, H * sizeof(float)) == 0);
    free(h1);
  }

  /* FP16 outputs are the fp32 results rounded to nearest even. */
  uint16_t* h16 = malloc(T * H * 2);
  uint16_t* p16 = malloc(S * H * 2);
  raptor_output_t o16 = outputs(NULL, 0, NULL, 0);
  o16.dtype = RAPTOR_DTYPE_FP16;
  o16.hidden = h16;
  o16.hidden_bytes = T * H * 2;
  o16.pooled = p16;
  o16.pooled_bytes = S * H * 2;
  EXPECT(RAPTOR_OK, raptor_encode, (m, &bt.b, &o16));
  for (size_t i = 0; i < T * H; i++) CHECK(h16[i] == f32_to_f16(hidden[i]));
  for (size_t i = 0; i < S * H; i++) CHECK(p16[i] == f32_to_f16(pooled[i]));
  /* fp16 needs half the bytes: an fp32-sized check would reject this */
  o16.hidden_bytes = T * H * 2 - 1;
  EXPECT(RAPTOR_ERR_BUFFER_TOO_SMALL, raptor_encode, (m, &bt.b, &o16));

  /* Misaligned buffers (inputs and outputs) are accepted and give the same bits. */
  unsigned char* raw_in = malloc(T * 4 + 1 + (S + 1) * 4 + 1);
  unsigned char* raw_out = malloc(T * H * 4 + 3);
  memcpy(raw_in + 1, bt.ids, T * 4);
  memcpy(raw_in + 1 + T * 4 + 1, bt.cu, (S + 1) * 4);
  raptor_batch_t mb = bt.b;
  mb.token_ids = (const int32_t*)(const void*)(raw_in + 1);
  mb.cu_seqlens = (const int32_t*)(const void*)(raw_in + 1 + T * 4 + 1);
  raptor_output_t mo = outputs(NULL, 0, NULL, 0);
  mo.hidden = raw_out + 3;
  mo.hidden_bytes = T * H * 4;
  EXPECT(RAPTOR_OK, raptor_encode, (m, &mb, &mo));
  CHECK(memcmp(raw_out + 3, hidden, T * H * 4) == 0);
  free(raw_in);
  free(raw_out);

  /* Token types change the result; all-zero types equal no types. */
  raptor_batch_t tb = bt.b;
  tb.token_type_ids = bt.types; /* zeros */
  float* ht = malloc(T * H * sizeof(float));
  raptor_output_t ot = outputs(ht, T * H, NULL, 0);
  EXPECT(RAPTOR_OK, raptor_encode, (m, &tb, &ot));
  CHECK(memcmp(ht, hidden, T * H * sizeof(float)) == 0);
  bt.types[0] = 1;
  EXPECT(RAPTOR_OK, raptor_encode, (m, &tb, &ot));
  CHECK(memcmp(ht, hidden, H * sizeof(float)) != 0);
  bt.types[0] = 0;

  /* Block-sparse BigBird: a sequence past (5+2r)b = 56 tokens is sparse;
   * its output depends on the seed and is deterministic for a seed. */
  batch_t sb;
  int slens[] = {200, 9, 57};
  batch_make(&sb, slens, 3, BIGBIRD_VOCAB);
  float* s1 = malloc(sb.n * H * sizeof(float));
  float* s2 = malloc(sb.n * H * sizeof(float));
  raptor_output_t os1 = outputs(s1, sb.n * H, NULL, 0), os2 = outputs(s2, sb.n * H, NULL, 0);
  sb.b.seeds = sb.seeds;
  EXPECT(RAPTOR_OK, raptor_encode, (bb, &sb.b, &os1));
  EXPECT(RAPTOR_OK, raptor_encode, (bb, &sb.b, &os2));
  CHECK(memcmp(s1, s2, sb.n * H * sizeof(float)) == 0);
  sb.seeds[0] = 12345;
  EXPECT(RAPTOR_OK, raptor_encode, (bb, &sb.b, &os2));
  CHECK(memcmp(s1, s2, 200 * H * sizeof(float)) != 0);                                   /* sparse: the seed matters */
  CHECK(memcmp(s1 + 200 * H, s2 + 200 * H, 9 * H * sizeof(float)) == 0); /* other sequences unchanged */
  free(s1);
  free(s2);
  batch_free(&sb);

  /* ---- the bad-input matrix ---- */
  raptor_batch_t b = bt.b;
  raptor_output_t ok = outputs(hidden, T * H, pooled, S * H);
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_encode, (NULL, &b, &ok));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_encode, ((raptor_model_t*)e, &b, &ok));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_encode, ((raptor_model_t*)&b, &b, &ok));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_encode, (m, NULL, &ok));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_encode, (m, &b, NULL));

  b = bt.b;
  b.struct_size = sizeof b + 8;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_encode, (m, &b, &ok));
  CHECK(strstr(raptor_last_error(), "raptor_batch_t") != NULL);
  raptor_output_t ob = ok;
  ob.struct_size = 8;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_encode, (m, &bt.b, &ob));
  CHECK(strstr(raptor_last_error(), "raptor_output_t") != NULL);

  b = bt.b;
  b.token_ids = NULL;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_encode, (m, &b, &ok));
  b = bt.b;
  b.cu_seqlens = NULL;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_encode, (m, &b, &ok));
  b = bt.b;
  b.num_tokens = 0;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_encode, (m, &b, &ok));
  b = bt.b;
  b.num_seqs = 0;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_encode, (m, &b, &ok));
  b = bt.b;
  b.num_seqs = T + 1;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_encode, (m, &b, &ok));
  b = bt.b;
  b.num_tokens = (size_t)1 << 40; /* oversized: rejected before anything is read */
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_encode, (m, &b, &ok));
  b = bt.b;
  b.num_tokens = SIZE_MAX;
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_encode, (m, &b, &ok));
  b = bt.b;
  b.num_seqs = SIZE_MAX;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_encode, (m, &b, &ok));
  b = bt.b;
  b.num_tokens = T - 1; /* cu_seqlens[last] != num_tokens */
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_encode, (m, &b, &ok));

  /* token ids >= vocab and negative; token types out of range */
  int32_t keep_id = bt.ids[3];
  bt.ids[3] = BERT_VOCAB;
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_encode, (m, &bt.b, &ok));
  bt.ids[3] = -1;
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_encode, (m, &bt.b, &ok));
  bt.ids[3] = INT32_MIN;
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_encode, (m, &bt.b, &ok));
  bt.ids[3] = keep_id;
  bt.types[2] = 2;
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_encode, (m, &tb, &ok));
  bt.types[2] = -1;
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_encode, (m, &tb, &ok));
  bt.types[2] = 0;

  /* non-monotonic and otherwise bad cu_seqlens */
  int32_t good_cu[5];
  memcpy(good_cu, bt.cu, sizeof good_cu);
  int32_t bad_cus[][5] = {
      {0, 5, 3, 23, 87},  /* decreasing */
      {0, 5, 5, 23, 87},  /* empty sequence */
      {1, 6, 7, 24, 87},  /* does not start at 0 */
      {0, 5, 6, 23, 86},  /* does not end at num_tokens */
      {0, -5, 6, 23, 87}, /* negative */
      {0, 5, 6, 23, 88},  /* past the end */
  };
  for (size_t i = 0; i < sizeof bad_cus / sizeof bad_cus[0]; i++) {
    memcpy(bt.cu, bad_cus[i], sizeof good_cu);
    EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_encode, (m, &bt.b, &ok));
  }
  memcpy(bt.cu, good_cu, sizeof good_cu);

  /* a sequence longer than the model allows */
  int32_t* long_ids = calloc(BERT_MAXLEN + 1, sizeof(int32_t));
  int32_t long_cu[2] = {0, BERT_MAXLEN + 1};
  raptor_batch_t lb;
  raptor_batch_default(&lb);
  lb.token_ids = long_ids;
  lb.num_tokens = BERT_MAXLEN + 1;
  lb.cu_seqlens = long_cu;
  lb.num_seqs = 1;
  float* lh = malloc((BERT_MAXLEN + 1) * H * sizeof(float));
  raptor_output_t lo = outputs(lh, (BERT_MAXLEN + 1) * H, NULL, 0);
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_encode, (m, &lb, &lo));
  lb.num_tokens = BERT_MAXLEN; /* exactly the limit works */
  long_cu[1] = BERT_MAXLEN;
  EXPECT(RAPTOR_OK, raptor_encode, (m, &lb, &lo));
  free(long_ids);
  free(lh);

  /* output buffers too small, NULL buffers with sizes, bad enums */
  raptor_output_t small = ok;
  small.hidden_bytes = T * H * sizeof(float) - 1;
  EXPECT(RAPTOR_ERR_BUFFER_TOO_SMALL, raptor_encode, (m, &bt.b, &small));
  small = ok;
  small.pooled_bytes = (S - 1) * H * sizeof(float);
  EXPECT(RAPTOR_ERR_BUFFER_TOO_SMALL, raptor_encode, (m, &bt.b, &small));
  small = ok;
  small.hidden_bytes = 0;
  EXPECT(RAPTOR_ERR_BUFFER_TOO_SMALL, raptor_encode, (m, &bt.b, &small));
  raptor_output_t bad = ok;
  bad.memory = RAPTOR_MEMORY_DEVICE;
  EXPECT(RAPTOR_ERR_UNSUPPORTED, raptor_encode, (m, &bt.b, &bad));
  bad = ok;
  bad.memory = 9;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_encode, (m, &bt.b, &bad));
  bad = ok;
  bad.dtype = RAPTOR_DTYPE_BF16;
  EXPECT(RAPTOR_ERR_UNSUPPORTED, raptor_encode, (m, &bt.b, &bad));
  bad = ok;
  bad.dtype = 9;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_encode, (m, &bt.b, &bad));
  bad = ok;
  bad.pooling = 7;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_encode, (m, &bt.b, &bad));
  /* No outputs at all is valid (the input is still validated). */
  raptor_output_t none = outputs(NULL, 0, NULL, 0);
  EXPECT(RAPTOR_OK, raptor_encode, (m, &bt.b, &none));
  bt.ids[0] = BERT_VOCAB + 5;
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_encode, (m, &bt.b, &none));
  bt.ids[0] = 5;

  /* Invalid pointers (undefined behaviour in C) still give a status, not a crash. */
  b = bt.b;
  b.token_ids = (const int32_t*)(uintptr_t)0xdead0000;
  EXPECT(RAPTOR_ERR_INTERNAL, raptor_encode, (m, &b, &ok));
  CHECK(strstr(raptor_last_error(), "memory fault") != NULL);
  raptor_output_t wild = ok;
  wild.pooled = (void*)(uintptr_t)0xdead0000;
  EXPECT(RAPTOR_ERR_INTERNAL, raptor_encode, (m, &bt.b, &wild));
  raptor_request_t* wr = NULL;
  EXPECT(RAPTOR_OK, raptor_submit, (m, &bt.b, &wild, NULL, NULL, &wr));
  raptor_status_t wres = -1;
  EXPECT(RAPTOR_OK, raptor_request_wait, (wr, -1, &wres));
  CHECK(wres == RAPTOR_ERR_INTERNAL && strlen(raptor_request_error(wr)) > 0);
  raptor_request_free(wr);
  EXPECT(RAPTOR_OK, raptor_encode, (m, &bt.b, &ok)); /* the engine is fine */

  /* defaults */
  raptor_batch_t db;
  memset(&db, 0x5a, sizeof db);
  raptor_batch_default(&db);
  CHECK(db.struct_size == sizeof db && db.token_ids == NULL && db.num_tokens == 0 && db.seeds == NULL);
  raptor_output_t dout;
  memset(&dout, 0x5a, sizeof dout);
  raptor_output_default(&dout);
  CHECK(dout.struct_size == RAPTOR_OUTPUT_V1_SIZE && dout.memory == RAPTOR_MEMORY_HOST && dout.dtype == RAPTOR_DTYPE_FP32);
  CHECK(dout.pooling == RAPTOR_POOLING_MEAN && dout.normalize == 0 && dout.hidden == NULL && dout.pooled_bytes == 0);
  raptor_batch_default(NULL);
  raptor_output_default(NULL);

  /* Stats count the successful synchronous encodes; rejected calls count nothing. */
  raptor_engine_stats_t s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  EXPECT(RAPTOR_OK, raptor_engine_get_stats, (e, &s));
  /* the faults above: one synchronous call and one request failed after running */
  CHECK(s.requests_completed > 0 && s.requests_failed == 2 && s.batches == s.requests_completed + 2);
  CHECK(s.tokens > 0 && s.requests_submitted == 1);

  free(hidden);
  free(pooled);
  free(cls);
  free(norm);
  free(h16);
  free(p16);
  free(ht);
  batch_free(&bt);
  raptor_engine_free(e);
}

/* ------------------------------------------------------------------ asynchronous requests */

typedef struct {
  atomic_int calls;
  atomic_int status;
  atomic_int wrong_req;
  raptor_request_t* expect_req; /* if set, the callback checks it gets this handle */
} done_state;

static void done_cb(raptor_request_t* req, raptor_status_t st, void* ud) {
  done_state* d = ud;
  if (d->expect_req && d->expect_req != req) atomic_fetch_add(&d->wrong_req, 1);
  atomic_store(&d->status, st);
  atomic_fetch_add(&d->calls, 1);
}

static void test_submit_basic(void) {
  raptor_engine_t* e = new_engine(0);
  raptor_model_t* m = load(e, bert_path);
  batch_t bt;
  int lens[] = {9, 30, 2};
  batch_make(&bt, lens, 3, BERT_VOCAB);
  const size_t T = bt.n, S = bt.nseq, H = HIDDEN;
  float* ref_h = malloc(T * H * 4);
  float* ref_p = malloc(S * H * 4);
  raptor_output_t ro = outputs(ref_h, T * H, ref_p, S * H);
  EXPECT(RAPTOR_OK, raptor_encode, (m, &bt.b, &ro));

  /* 1. a callback */
  float* h = calloc(T * H, 4);
  float* p = calloc(S * H, 4);
  raptor_output_t o = outputs(h, T * H, p, S * H);
  done_state d = {0};
  raptor_request_t* req = NULL;
  EXPECT(RAPTOR_OK, raptor_submit, (m, &bt.b, &o, done_cb, &d, &req));
  CHECK(wait_until(&d.calls, 1, 30000));
  raptor_status_t res = -1;
  EXPECT(RAPTOR_OK, raptor_request_wait, (req, -1, &res));
  CHECK(res == RAPTOR_OK && atomic_load(&d.status) == RAPTOR_OK);
  CHECK(memcmp(h, ref_h, T * H * 4) == 0 && memcmp(p, ref_p, S * H * 4) == 0);
  CHECK(strcmp(raptor_request_error(req), "") == 0);
  int32_t done = -1;
  EXPECT(RAPTOR_OK, raptor_request_poll, (req, &done, NULL));
  CHECK(done == 1);
  EXPECT(RAPTOR_OK, raptor_request_cancel, (req)); /* completed: no-op */
  EXPECT(RAPTOR_OK, raptor_request_wait, (req, 0, &res));
  CHECK(res == RAPTOR_OK);
  raptor_request_free(req);
  sleep_ms(20);
  CHECK(atomic_load(&d.calls) == 1);

  /* 2. wait, with the input modified right after submit (it was copied) */
  memset(h, 0, T * H * 4);
  int32_t saved = bt.ids[0];
  EXPECT(RAPTOR_OK, raptor_submit, (m, &bt.b, &o, NULL, NULL, &req));
  bt.ids[0] = 9999;
  bt.cu[1] = 1;
  EXPECT(RAPTOR_OK, raptor_request_wait, (req, -1, &res));
  CHECK(res == RAPTOR_OK && memcmp(h, ref_h, T * H * 4) == 0);
  bt.ids[0] = saved;
  bt.cu[1] = 9;
  raptor_request_free(req);

  /* 3. poll, fp16 */
  uint16_t* h16 = malloc(T * H * 2);
  raptor_output_t o16 = outputs(NULL, 0, NULL, 0);
  o16.dtype = RAPTOR_DTYPE_FP16;
  o16.hidden = h16;
  o16.hidden_bytes = T * H * 2;
  EXPECT(RAPTOR_OK, raptor_submit, (m, &bt.b, &o16, NULL, NULL, &req));
  double end = now_s() + 30;
  done = 0;
  res = -1;
  while (!done && now_s() < end) {
    EXPECT(RAPTOR_OK, raptor_request_poll, (req, &done, &res));
    if (!done) sleep_ms(1);
  }
  CHECK(done == 1 && res == RAPTOR_OK);
  for (size_t i = 0; i < T * H; i++) CHECK(h16[i] == f32_to_f16(ref_h[i]));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_request_poll, (req, NULL, &res));
  raptor_request_free(req);
  free(h16);

  /* Bad submits: the status comes at once, nothing is queued, out_req is untouched. */
  raptor_request_t* const sentinel = (raptor_request_t*)(uintptr_t)0x5e1;
  req = sentinel;
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_submit, (NULL, &bt.b, &o, NULL, NULL, &req));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_submit, (m, &bt.b, &o, NULL, NULL, NULL));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_submit, (m, NULL, &o, NULL, NULL, &req));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_submit, (m, &bt.b, NULL, NULL, NULL, &req));
  bt.ids[1] = BERT_VOCAB;
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_submit, (m, &bt.b, &o, done_cb, &d, &req));
  bt.ids[1] = -7;
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_submit, (m, &bt.b, &o, done_cb, &d, &req));
  bt.ids[1] = 5;
  bt.cu[1] = 40;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_submit, (m, &bt.b, &o, done_cb, &d, &req));
  bt.cu[1] = 9;
  raptor_output_t small = o;
  small.pooled_bytes = 4;
  EXPECT(RAPTOR_ERR_BUFFER_TOO_SMALL, raptor_submit, (m, &bt.b, &small, done_cb, &d, &req));
  raptor_batch_t b = bt.b;
  b.num_tokens = (size_t)1 << 62;
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_submit, (m, &b, &o, done_cb, &d, &req));
  b = bt.b;
  b.struct_size = 1;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_submit, (m, &b, &o, done_cb, &d, &req));
  raptor_output_t dev = o;
  dev.memory = RAPTOR_MEMORY_DEVICE;
  EXPECT(RAPTOR_ERR_UNSUPPORTED, raptor_submit, (m, &bt.b, &dev, done_cb, &d, &req));
  CHECK(req == sentinel);
  sleep_ms(20);
  CHECK(atomic_load(&d.calls) == 1); /* no callback for a rejected submit */

  /* Request functions on bad handles. */
  raptor_status_t keep = 99;
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_request_wait, (NULL, -1, &keep));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_request_wait, ((raptor_request_t*)m, -1, &keep));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_request_poll, (NULL, &done, &keep));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_request_cancel, (NULL));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_request_cancel, ((raptor_request_t*)&d));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_request_wait, (req == sentinel ? NULL : req, 0, &keep));
  CHECK(keep == 99);
  prime();
  CHECK(strcmp(raptor_request_error(NULL), "") == 0);
  expect_void_error("raptor_request_error", "NULL", __LINE__);
  raptor_request_free(NULL);
  prime();
  raptor_request_free((raptor_request_t*)e);
  expect_void_error("raptor_request_free", "engine", __LINE__);

  /* A freed request. */
  EXPECT(RAPTOR_OK, raptor_submit, (m, &bt.b, &o, NULL, NULL, &req));
  raptor_request_t* freed = req;
  EXPECT(RAPTOR_OK, raptor_request_wait, (req, -1, &res));
  raptor_request_free(req);
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_request_wait, (freed, -1, &res));
  CHECK(strstr(raptor_last_error(), "freed") != NULL);
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_request_poll, (freed, &done, &res));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_request_cancel, (freed));
  prime();
  raptor_request_free(freed);
  expect_void_error("raptor_request_free", "freed", __LINE__);

  raptor_engine_stats_t s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  EXPECT(RAPTOR_OK, raptor_engine_get_stats, (e, &s));
  CHECK(s.requests_submitted == 4 && s.live_requests == 0 && s.queue_depth == 0);

  free(h);
  free(p);
  free(ref_h);
  free(ref_p);
  batch_free(&bt);
  raptor_engine_free(e);
}

/* ---- callbacks that call back into the library ---- */

typedef struct {
  raptor_engine_t* engine;
  raptor_model_t* model;
  const raptor_batch_t* batch;
  raptor_output_t out2;
  atomic_int calls, wait_ok, free_refused_engine, free_refused_model, chained_ok, chained_calls;
  atomic_int error_ok;
  raptor_request_t* chained;
} reenter_state;

static void chained_cb(raptor_request_t* req, raptor_status_t st, void* ud) {
  reenter_state* r = ud;
  if (st == RAPTOR_OK) atomic_fetch_add(&r->chained_ok, 1);
  /* free inside the callback */
  raptor_request_free(req);
  atomic_fetch_add(&r->chained_calls, 1);
}

static void reenter_cb(raptor_request_t* req, raptor_status_t st, void* ud) {
  reenter_state* r = ud;
  raptor_status_t res = -1;
  /* waiting on itself returns at once */
  if (raptor_request_wait(req, -1, &res) == RAPTOR_OK && res == st) atomic_fetch_add(&r->wait_ok, 1);
  /* the request's message is there; raptor_last_error is this thread's */
  if (strcmp(raptor_request_error(req), "") == 0) atomic_fetch_add(&r->error_ok, 1);
  /* freeing the engine or the model here is refused, with a message */
  raptor_engine_free(r->engine);
  if (strncmp(raptor_last_error(), "raptor_engine_free", 18) == 0 && strstr(raptor_last_error(), "callback"))
    atomic_fetch_add(&r->free_refused_engine, 1);
  raptor_model_free(r->model);
  if (strncmp(raptor_last_error(), "raptor_model_free", 17) == 0 && strstr(raptor_last_error(), "callback"))
    atomic_fetch_add(&r->free_refused_model, 1);
  /* submit from within the callback; its callback frees its own request */
  raptor_request_t* next = NULL;
  if (raptor_submit(r->model, r->batch, &r->out2, chained_cb, r, &next) == RAPTOR_OK) r->chained = next;
  /* free this request inside its callback */
  raptor_request_free(req);
  atomic_fetch_add(&r->calls, 1);
}

static void test_reentrant_callbacks(void) {
  raptor_engine_t* e = new_engine(0);
  raptor_model_t* m = load(e, bert_path);
  batch_t bt;
  int lens[] = {12};
  batch_make(&bt, lens, 1, BERT_VOCAB);
  float p1[HIDDEN], p2[HIDDEN], ref[HIDDEN];
  raptor_output_t ro = outputs(NULL, 0, ref, HIDDEN);
  EXPECT(RAPTOR_OK, raptor_encode, (m, &bt.b, &ro));
  reenter_state r = {.engine = e, .model = m, .batch = &bt.b};
  r.out2 = outputs(NULL, 0, p2, HIDDEN);
  raptor_output_t o = outputs(NULL, 0, p1, HIDDEN);
  raptor_request_t* req = NULL;
  EXPECT(RAPTOR_OK, raptor_submit, (m, &bt.b, &o, reenter_cb, &r, &req));
  CHECK(wait_until(&r.calls, 1, 30000));
  CHECK(wait_until(&r.chained_calls, 1, 30000));
  CHECK(atomic_load(&r.wait_ok) == 1 && atomic_load(&r.error_ok) == 1);
  CHECK(atomic_load(&r.free_refused_engine) == 1 && atomic_load(&r.free_refused_model) == 1);
  CHECK(atomic_load(&r.chained_ok) == 1);
  CHECK(memcmp(p1, ref, sizeof ref) == 0 && memcmp(p2, ref, sizeof ref) == 0);
  /* both requests were freed inside their callbacks */
  raptor_status_t res;
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_request_wait, (req, 0, &res));
  /* the engine and the model survived the refused frees */
  EXPECT(RAPTOR_OK, raptor_encode, (m, &bt.b, &ro));
  raptor_engine_stats_t s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  EXPECT(RAPTOR_OK, raptor_engine_get_stats, (e, &s));
  CHECK(s.live_requests == 0 && s.live_models == 1 && s.requests_submitted == 2);
  batch_free(&bt);
  raptor_engine_free(e);
}

/* ---- a full queue, timeouts, cancel, model and engine free with pending requests ----
 *
 * Completion callbacks that block hold the engine's deliverers; the batches
 * computed after them wait for delivery, the pipeline (dispatcher, lanes,
 * batch former) backs up behind them, and requests submitted after that
 * stay queued: that makes BUSY, TIMEOUT and the cancellation of queued
 * requests deterministic. */

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int open;
  atomic_int entered;
  atomic_int calls;
  atomic_int by_status[RAPTOR_ERR_TIMEOUT + 1];
} gate_t;

static void gate_cb(raptor_request_t* req, raptor_status_t st, void* ud) {
  (void)req;
  gate_t* g = ud;
  atomic_fetch_add(&g->entered, 1);
  pthread_mutex_lock(&g->mu);
  while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
  if (st >= 0 && st <= RAPTOR_ERR_TIMEOUT) atomic_fetch_add(&g->by_status[st], 1);
  atomic_fetch_add(&g->calls, 1);
}

static void gate_open(gate_t* g) {
  pthread_mutex_lock(&g->mu);
  g->open = 1;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

static void* open_later(void* arg) {
  sleep_ms(200);
  gate_open(arg);
  return NULL;
}

static int64_t queue_depth(raptor_engine_t* e) {
  raptor_engine_stats_t s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  if (raptor_engine_get_stats(e, &s) != RAPTOR_OK) return -1;
  return s.queue_depth;
}

static void test_queue_and_shutdown(void) {
  enum { CAP = 4, MAXREQ = 512 };
  raptor_engine_t* e = new_engine(CAP);
  raptor_model_t* m = load(e, bert_path);
  raptor_model_t* m2 = load(e, bert_path);
  batch_t bt;
  int lens[] = {16};
  batch_make(&bt, lens, 1, BERT_VOCAB);
  static float pooled[MAXREQ][HIDDEN];
  raptor_request_t* reqs[MAXREQ];
  int n = 0;
  gate_t g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

  /* Submit blocking requests until one stays queued: every worker is then
   * inside a blocked callback. */
  int blocked = 0;
  while (n < 256 && !blocked) {
    raptor_output_t o = outputs(NULL, 0, pooled[n], HIDDEN);
    EXPECT(RAPTOR_OK, raptor_submit, (m, &bt.b, &o, gate_cb, &g, &reqs[n]));
    n++;
    if (!wait_until(&g.entered, n, 300)) blocked = queue_depth(e) == 1;
  }
  CHECK(blocked);
  if (!blocked) {
    gate_open(&g);
    raptor_engine_free(e);
    batch_free(&bt);
    return;
  }
  raptor_request_t* target = reqs[n - 1]; /* queued; its callback blocks too once the gate opens */

  /* Fill the queue (CAP) with requests of the second model, then BUSY. */
  done_state d2[CAP] = {0};
  raptor_request_t* q[CAP];
  for (int i = 0; i < CAP - 1; i++) {
    raptor_output_t o = outputs(NULL, 0, pooled[n + i], HIDDEN);
    EXPECT(RAPTOR_OK, raptor_submit, (m2, &bt.b, &o, done_cb, &d2[i], &q[i]));
  }
  raptor_request_t* const sentinel = (raptor_request_t*)(uintptr_t)0x5e1;
  raptor_request_t* busy = sentinel;
  raptor_output_t ob = outputs(NULL, 0, pooled[n + CAP], HIDDEN);
  EXPECT(RAPTOR_ERR_BUSY, raptor_submit, (m, &bt.b, &ob, done_cb, &d2[CAP - 1], &busy));
  CHECK(busy == sentinel);
  CHECK(queue_depth(e) == CAP);

  /* Timeouts and poll on a queued request. */
  raptor_status_t res = 99;
  EXPECT(RAPTOR_ERR_TIMEOUT, raptor_request_wait, (target, 0, &res));
  EXPECT(RAPTOR_ERR_TIMEOUT, raptor_request_wait, (target, 2000, &res));
  CHECK(res == 99);
  int32_t done = -1;
  EXPECT(RAPTOR_OK, raptor_request_poll, (target, &done, &res));
  CHECK(done == 0 && res == 99);
  CHECK(strcmp(raptor_request_error(target), "") == 0); /* pending */

  /* Cancel a queued request: it completes at once, its callback runs once. */
  EXPECT(RAPTOR_OK, raptor_request_cancel, (q[0]));
  EXPECT(RAPTOR_OK, raptor_request_wait, (q[0], 5000000, &res));
  CHECK(res == RAPTOR_ERR_CANCELLED);
  CHECK(strlen(raptor_request_error(q[0])) > 0);
  CHECK(wait_until(&d2[0].calls, 1, 5000) && atomic_load(&d2[0].status) == RAPTOR_ERR_CANCELLED);
  EXPECT(RAPTOR_OK, raptor_request_cancel, (q[0])); /* again: no-op */

  /* Free a queued request: cancelled, its callback still runs once. */
  raptor_request_free(q[1]);
  CHECK(wait_until(&d2[1].calls, 1, 5000) && atomic_load(&d2[1].status) == RAPTOR_ERR_CANCELLED);
  CHECK(queue_depth(e) == 2);

  /* Free the second model: its pending request completes with SHUTDOWN. */
  raptor_model_free(m2);
  CHECK(atomic_load(&d2[2].calls) == 1 && atomic_load(&d2[2].status) == RAPTOR_ERR_SHUTDOWN);
  EXPECT(RAPTOR_OK, raptor_request_wait, (q[2], 0, &res));
  CHECK(res == RAPTOR_ERR_SHUTDOWN);
  CHECK(strstr(raptor_request_error(q[2]), "shut") != NULL);
  CHECK(queue_depth(e) == 1);

  /* Free the engine while deliverers are blocked and `target` is queued: it
   * returns once every callback has run. The requests inside callbacks
   * completed OK; every other one (queued like `target`, or computed but
   * not yet delivered) completes with SHUTDOWN. */
  int in_callbacks = atomic_load(&g.entered);
  CHECK(in_callbacks >= 1 && in_callbacks < n);
  pthread_t opener;
  pthread_create(&opener, NULL, open_later, &g);
  raptor_engine_free(e);
  pthread_join(opener, NULL);
  CHECK(atomic_load(&g.calls) == n);
  CHECK(atomic_load(&g.by_status[RAPTOR_OK]) == in_callbacks);
  CHECK(atomic_load(&g.by_status[RAPTOR_ERR_SHUTDOWN]) == n - in_callbacks);
  for (int i = 0; i < CAP - 1; i++) CHECK(atomic_load(&d2[i].calls) == 1);
  CHECK(atomic_load(&d2[CAP - 1].calls) == 0); /* the BUSY submit never ran */
  /* the engine freed the request handles too */
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_request_wait, (target, 0, &res));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_request_poll, (q[0], &done, &res));
  batch_free(&bt);
}

/* Engine free with many pending requests and no blocking: each completes
 * exactly once, with OK or SHUTDOWN. */
static void test_free_with_pending(void) {
  enum { N = 300 };
  raptor_engine_t* e = new_engine(N);
  raptor_model_t* m = load(e, bigbird_path);
  batch_t bt;
  int lens[] = {120, 60};
  batch_make(&bt, lens, 2, BIGBIRD_VOCAB);
  static float pooled[N][2 * HIDDEN];
  static done_state d[N];
  memset(d, 0, sizeof d);
  for (int i = 0; i < N; i++) {
    raptor_output_t o = outputs(NULL, 0, pooled[i], 2 * HIDDEN);
    raptor_request_t* r;
    EXPECT(RAPTOR_OK, raptor_submit, (m, &bt.b, &o, done_cb, &d[i], &r));
  }
  raptor_engine_free(e);
  int ok = 0, shut = 0, other = 0;
  for (int i = 0; i < N; i++) {
    CHECK(atomic_load(&d[i].calls) == 1);
    switch (atomic_load(&d[i].status)) {
      case RAPTOR_OK: ok++; break;
      case RAPTOR_ERR_SHUTDOWN: shut++; break;
      default: other++;
    }
  }
  CHECK(other == 0 && ok + shut == N);
  fprintf(stderr, "  engine free with %d pending: %d completed, %d shut down\n", N, ok, shut);
  batch_free(&bt);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char** argv) {
  const char* dir = argc > 1 ? argv[1] : getenv("RAPTOR_TESTMODELS");
  if (!dir) {
    fprintf(stderr, "usage: %s MODEL_DIR (or set RAPTOR_TESTMODELS)\n", argv[0]);
    return 2;
  }
  snprintf(bert_path, sizeof bert_path, "%s/tiny-bert.raptor", dir);
  snprintf(bigbird_path, sizeof bigbird_path, "%s/tiny-bigbird.raptor", dir);
  struct stat st;
  if (stat(bert_path, &st) != 0 || stat(bigbird_path, &st) != 0) {
    fprintf(stderr, "test models missing in %s: run `go run ./tests/tools/mkmodel -o %s`\n", dir, dir);
    return 2;
  }
  snprintf(tmp_dir, sizeof tmp_dir, "/tmp/raptor-c-test-XXXXXX");
  if (!mkdtemp(tmp_dir)) {
    perror("mkdtemp");
    return 2;
  }

  /* Everything the library might print to stdout lands in this file. */
  char stdout_path[4200];
  snprintf(stdout_path, sizeof stdout_path, "%s/stdout", tmp_dir);
  fflush(stdout);
  int saved_stdout = dup(1);
  int fd = open(stdout_path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
  dup2(fd, 1);
  close(fd);

  struct {
    const char* name;
    void (*fn)(void);
  } tests[] = {
      {"versions and errors", test_versions_and_errors},
      {"logging", test_logging},
      {"engine", test_engine},
      {"models", test_models},
      {"encode", test_encode},
      {"submit", test_submit_basic},
      {"reentrant callbacks", test_reentrant_callbacks},
      {"queue, cancel, shutdown", test_queue_and_shutdown},
      {"free with pending", test_free_with_pending},
  };
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    int before = atomic_load(&failures);
    double t0 = now_s();
    tests[i].fn();
    fprintf(stderr, "%-4s %s (%.2fs)\n", atomic_load(&failures) == before ? "ok" : "FAIL", tests[i].name,
            now_s() - t0);
  }

  fflush(stdout);
  dup2(saved_stdout, 1);
  close(saved_stdout);
  size_t out_size = 0;
  unsigned char* out = read_file(stdout_path, &out_size);
  CHECK(out != NULL && out_size == 0); /* the library never writes to stdout */
  free(out);
  unlink(stdout_path);
  char corrupt[4200];
  snprintf(corrupt, sizeof corrupt, "%s/corrupt.raptor", tmp_dir);
  unlink(corrupt);
  rmdir(tmp_dir);

  fprintf(stderr, "%d checks, %d failures\n", atomic_load(&checks), atomic_load(&failures));
  return atomic_load(&failures) == 0 ? 0 : 1;
}
