/* The scheduler through the C ABI (issue 8): raptor_submit_options_default,
 * raptor_submit_with_options (priority, deadline, blocking on a full queue),
 * raptor_engine_shutdown (drain, drain that times out, cancel),
 * raptor_engine_metrics_prometheus, the appended raptor_engine_stats_t fields
 * at both struct sizes, RAPTOR_POOLING_POOLER, merged batches bit-identical
 * to raptor_encode, and every bad input of the new functions: each failing
 * call is checked for its status and for a message from that function.
 *
 * Usage: test_sched DIR   (DIR holds tiny-bert.raptor and tiny-bigbird.raptor,
 * written by tests/tools/mkmodel). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "raptor.h"
#include "test_check.h"
#include "test_time.h"


_Static_assert(RAPTOR_ENGINE_STATS_V1_SIZE == offsetof(raptor_engine_stats_t, process_heap_bytes) + 8,
               "stats v1 size");
_Static_assert(RAPTOR_POOLING_POOLER == 2 && RAPTOR_SHUTDOWN_DRAIN == 0 && RAPTOR_SHUTDOWN_CANCEL == 1, "enums");

static char dir[4096];
enum { HIDDEN = 32, BERT_VOCAB = 79, BERT_MAXLEN = 128, BIGBIRD_VOCAB = 100 };

static raptor_engine_t* new_engine(int64_t capacity, int64_t delay_us) {
  raptor_engine_options_t o;
  raptor_engine_options_default(&o);
  o.backend = RAPTOR_BACKEND_CPU;
  if (capacity > 0) o.queue_capacity = capacity;
  if (delay_us >= 0) o.max_queue_delay_us = delay_us;
  raptor_engine_t* e = NULL;
  EXPECT(RAPTOR_OK, raptor_engine_create, (&o, &e));
  return e;
}

static raptor_model_t* load(raptor_engine_t* e, const char* name) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  raptor_model_t* m = NULL;
  EXPECT(RAPTOR_OK, raptor_model_load, (e, path, &m));
  return m;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n) {
  rng = rng * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng >> 33) % n;
}

typedef struct {
  int32_t ids[512], cu[9];
  uint64_t seeds[8];
  raptor_batch_t b;
} batch_t;

static void batch_make(batch_t* bt, const int* lens, int nseq, int vocab) {
  bt->cu[0] = 0;
  for (int s = 0; s < nseq; s++) bt->cu[s + 1] = bt->cu[s] + lens[s];
  for (int i = 0; i < bt->cu[nseq]; i++) bt->ids[i] = 5 + (int32_t)rnd((uint32_t)vocab - 5);
  for (int s = 0; s < nseq; s++) bt->seeds[s] = rnd(1000);
  raptor_batch_default(&bt->b);
  bt->b.token_ids = bt->ids;
  bt->b.num_tokens = (size_t)bt->cu[nseq];
  bt->b.cu_seqlens = bt->cu;
  bt->b.num_seqs = (size_t)nseq;
  bt->b.seeds = bt->seeds;
}

static raptor_output_t outputs(float* hidden, size_t hidden_floats, float* pooled, size_t pooled_floats, int32_t pooling) {
  raptor_output_t o;
  raptor_output_default(&o);
  o.hidden = hidden;
  o.hidden_bytes = hidden_floats * sizeof(float);
  o.pooled = pooled;
  o.pooled_bytes = pooled_floats * sizeof(float);
  o.pooling = pooling;
  return o;
}

typedef struct {
  atomic_int calls;
  atomic_int status;
} done_state;

static void done_cb(raptor_request_t* req, raptor_status_t st, void* ud) {
  (void)req;
  done_state* d = ud;
  atomic_store(&d->status, st);
  atomic_fetch_add(&d->calls, 1);
}

static raptor_engine_stats_t stats(raptor_engine_t* e) {
  raptor_engine_stats_t s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  EXPECT(RAPTOR_OK, raptor_engine_get_stats, (e, &s));
  return s;
}

/* ------------------------------------------------------------------ submit options */

static void test_submit_options(void) {
  raptor_submit_options_t so;
  memset(&so, 0x5a, sizeof so);
  raptor_submit_options_default(&so);
  CHECK(so.struct_size == sizeof so && so.priority == 0 && so.deadline_us == 0 && so.block_timeout_us == 0);
  raptor_submit_options_default(NULL);

  raptor_engine_t* e = new_engine(0, 20000);
  raptor_model_t* bert = load(e, "tiny-bert.raptor");
  raptor_model_t* bigbird = load(e, "tiny-bigbird.raptor");

  /* Happy paths: NULL options, priority and a generous deadline, POOLER
   * pooling; each result equals raptor_encode's. */
  int lens[] = {12, 30, 5};
  batch_t bt;
  batch_make(&bt, lens, 3, BERT_VOCAB);
  int32_t poolings[] = {RAPTOR_POOLING_CLS, RAPTOR_POOLING_MEAN, RAPTOR_POOLING_POOLER};
  for (int p = 0; p < 3; p++) {
    float want_h[47 * HIDDEN], want_p[3 * HIDDEN], got_h[47 * HIDDEN], got_p[3 * HIDDEN];
    raptor_output_t ow = outputs(want_h, 47 * HIDDEN, want_p, 3 * HIDDEN, poolings[p]);
    EXPECT(RAPTOR_OK, raptor_encode, (bert, &bt.b, &ow));
    for (int variant = 0; variant < 2; variant++) {
      memset(got_h, 0, sizeof got_h);
      memset(got_p, 0, sizeof got_p);
      raptor_output_t og = outputs(got_h, 47 * HIDDEN, got_p, 3 * HIDDEN, poolings[p]);
      raptor_submit_options_default(&so);
      so.priority = 7 - variant * 9;
      so.deadline_us = 60 * 1000000LL;
      so.block_timeout_us = -1;
      done_state d = {0};
      raptor_request_t* r = NULL;
      EXPECT(RAPTOR_OK, raptor_submit_with_options, (bert, &bt.b, &og, variant ? NULL : &so, done_cb, &d, &r));
      raptor_status_t res = -1;
      EXPECT(RAPTOR_OK, raptor_request_wait, (r, -1, &res));
      CHECK(res == RAPTOR_OK);
      CHECK(memcmp(got_h, want_h, sizeof got_h) == 0 && memcmp(got_p, want_p, sizeof got_p) == 0);
      CHECK(wait_until(&d.calls, 1, 5000) && atomic_load(&d.status) == RAPTOR_OK);
      raptor_request_free(r);
    }
  }

  /* Bad inputs: a status at once, nothing queued, out_req untouched, no callback. */
  raptor_request_t* const sentinel = (raptor_request_t*)(uintptr_t)0x5e1;
  raptor_request_t* r = sentinel;
  float pooled[3 * HIDDEN];
  raptor_output_t o = outputs(NULL, 0, pooled, 3 * HIDDEN, RAPTOR_POOLING_MEAN);
  done_state d = {0};
  raptor_submit_options_default(&so);
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_submit_with_options, (NULL, &bt.b, &o, &so, done_cb, &d, &r));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_submit_with_options, ((raptor_model_t*)e, &bt.b, &o, &so, done_cb, &d, &r));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_submit_with_options, (bert, &bt.b, &o, &so, done_cb, &d, NULL));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_submit_with_options, (bert, NULL, &o, &so, done_cb, &d, &r));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_submit_with_options, (bert, &bt.b, NULL, &so, done_cb, &d, &r));
  so.struct_size = sizeof so - 8;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_submit_with_options, (bert, &bt.b, &o, &so, done_cb, &d, &r));
  CHECK(strstr(raptor_last_error(), "raptor_submit_options_t") != NULL);
  raptor_submit_options_default(&so);
  so.deadline_us = -1;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_submit_with_options, (bert, &bt.b, &o, &so, done_cb, &d, &r));
  CHECK(strstr(raptor_last_error(), "deadline_us") != NULL);
  so.deadline_us = INT64_MAX;
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_submit_with_options, (bert, &bt.b, &o, &so, done_cb, &d, &r));
  raptor_submit_options_default(&so);
  so.block_timeout_us = INT64_MAX;
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_submit_with_options, (bert, &bt.b, &o, &so, done_cb, &d, &r));
  raptor_submit_options_default(&so);
  batch_t longb;
  int too_long[] = {BERT_MAXLEN + 1};
  batch_make(&longb, too_long, 1, BERT_VOCAB);
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_submit_with_options, (bert, &longb.b, &o, &so, done_cb, &d, &r));
  CHECK(strstr(raptor_last_error(), "allows") != NULL); /* "sequence 0 has 129 tokens, the model allows 128" */
  raptor_output_t opool = outputs(NULL, 0, pooled, 3 * HIDDEN, RAPTOR_POOLING_POOLER);
  batch_t bb;
  batch_make(&bb, lens, 3, BIGBIRD_VOCAB);
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_submit_with_options, (bigbird, &bb.b, &opool, &so, done_cb, &d, &r));
  CHECK(strstr(raptor_last_error(), "pooler") != NULL);
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_encode, (bigbird, &bb.b, &opool));
  opool.pooling = 3;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_encode, (bert, &bt.b, &opool));
  CHECK(strstr(raptor_last_error(), "POOLER") != NULL);
  CHECK(r == sentinel && atomic_load(&d.calls) == 0);

  raptor_engine_stats_t s = stats(e);
  CHECK(s.rejected_by_status[RAPTOR_ERR_OUT_OF_RANGE] >= 1 && s.rejected_by_status[RAPTOR_ERR_INVALID_ARGUMENT] >= 1);
  raptor_engine_free(e);
}

/* ------------------------------------------------------------------ merged batches */

/* Requests queued together share batches, and each result is bit-identical
 * to raptor_encode of the request alone. */
static void test_merged_batches(void) {
  enum { N = 60 };
  raptor_engine_t* e = new_engine(0, 30000);
  raptor_model_t* m[2] = {load(e, "tiny-bert.raptor"), load(e, "tiny-bigbird.raptor")};
  static batch_t bt[N];
  static float want_h[N][600 * HIDDEN], got_h[N][600 * HIDDEN], want_p[N][8 * HIDDEN], got_p[N][8 * HIDDEN];
  raptor_request_t* reqs[N];
  for (int i = 0; i < N; i++) {
    int k = i % 2, nseq = 1 + (int)rnd(3), lens[3];
    for (int s = 0; s < nseq; s++) lens[s] = rnd(10) == 0 ? 60 + (int)rnd(60) : 1 + (int)rnd(30);
    batch_make(&bt[i], lens, nseq, k ? BIGBIRD_VOCAB : BERT_VOCAB);
    int32_t pooling = k ? (int32_t)rnd(2) : (int32_t)rnd(3);
    size_t T = bt[i].b.num_tokens;
    raptor_output_t ow = outputs(want_h[i], T * HIDDEN, want_p[i], (size_t)nseq * HIDDEN, pooling);
    ow.normalize = (int32_t)rnd(2);
    EXPECT(RAPTOR_OK, raptor_encode, (m[k], &bt[i].b, &ow));
    raptor_output_t og = ow;
    og.hidden = got_h[i];
    og.pooled = got_p[i];
    EXPECT(RAPTOR_OK, raptor_submit, (m[k], &bt[i].b, &og, NULL, NULL, &reqs[i]));
  }
  for (int i = 0; i < N; i++) {
    raptor_status_t res = -1;
    EXPECT(RAPTOR_OK, raptor_request_wait, (reqs[i], -1, &res));
    CHECK(res == RAPTOR_OK);
    size_t T = bt[i].b.num_tokens, S = bt[i].b.num_seqs;
    CHECK(memcmp(got_h[i], want_h[i], T * HIDDEN * 4) == 0);
    CHECK(memcmp(got_p[i], want_p[i], S * HIDDEN * 4) == 0);
    raptor_request_free(reqs[i]);
  }
  raptor_engine_stats_t s = stats(e);
  fprintf(stderr, "  %d requests in %llu scheduler batches (%.1f requests, fill %.3f per batch)\n", N,
          (unsigned long long)s.scheduler_batches, s.mean_batch_requests, s.mean_batch_fill);
  CHECK(s.scheduler_requests == N && s.scheduler_batches < N && s.mean_batch_requests > 1);
  CHECK(s.padded_tokens == 0 && s.padding_ratio == 0.0);
  CHECK(s.queue_latency_p50_us > 0 && s.queue_latency_p99_us >= s.queue_latency_p50_us);
  CHECK(s.latency_p50_us > 0 && s.latency_p99_us >= s.latency_p50_us);
  CHECK(s.completed_by_status[RAPTOR_OK] == s.requests_completed);
  CHECK(s.uptime_us > 0 && s.device_busy_us > 0 && s.device_busy_us <= s.uptime_us);
  CHECK(s.tokens_per_second > 0 && s.device_busy_share > 0 && s.device_busy_share <= 1);
  CHECK(s.queue_capacity == 1024);
  raptor_engine_free(e);
}

/* ------------------------------------------------------------------ stats and metrics */

static void test_stats_and_metrics(void) {
  raptor_engine_t* e = new_engine(77, -1);
  raptor_model_t* m = load(e, "tiny-bert.raptor");
  int lens[] = {9};
  batch_t bt;
  batch_make(&bt, lens, 1, BERT_VOCAB);
  float pooled[HIDDEN];
  raptor_output_t o = outputs(NULL, 0, pooled, HIDDEN, RAPTOR_POOLING_CLS);
  EXPECT(RAPTOR_OK, raptor_encode, (m, &bt.b, &o));

  /* v1 size: the v1 fields, nothing past them. */
  raptor_engine_stats_t s;
  memset(&s, 0x5a, sizeof s);
  s.struct_size = RAPTOR_ENGINE_STATS_V1_SIZE;
  EXPECT(RAPTOR_OK, raptor_engine_get_stats, (e, &s));
  CHECK(s.struct_size == RAPTOR_ENGINE_STATS_V1_SIZE && s.requests_completed == 1 && s.live_models == 1);
  const unsigned char* tail = (const unsigned char*)&s + RAPTOR_ENGINE_STATS_V1_SIZE;
  int untouched = 1;
  for (size_t i = 0; i < sizeof s - RAPTOR_ENGINE_STATS_V1_SIZE; i++) untouched &= tail[i] == 0x5a;
  CHECK(untouched);
  /* current size */
  s = stats(e);
  CHECK(s.queue_capacity == 77 && s.completed_by_status[RAPTOR_OK] == 1 && s.padding_ratio == 0.0);
  /* any other size */
  memset(&s, 0, sizeof s);
  s.struct_size = RAPTOR_ENGINE_STATS_V1_SIZE + 8;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_get_stats, (e, &s));
  CHECK(strstr(raptor_last_error(), "raptor_engine_stats_t") != NULL);

  /* Prometheus text: size query, exact buffer, too small, bad arguments. */
  size_t n = 0;
  EXPECT(RAPTOR_OK, raptor_engine_metrics_prometheus, (e, NULL, 0, &n));
  CHECK(n > 1000);
  size_t cap = n + 4096;
  char* buf = malloc(cap);
  size_t got = 0;
  EXPECT(RAPTOR_OK, raptor_engine_metrics_prometheus, (e, buf, cap, &got));
  CHECK(got > 1000 && strlen(buf) == got && buf[got - 1] == '\n');
  CHECK(strstr(buf, "raptor_requests_completed_total{status=\"OK\"} 1\n") != NULL);
  CHECK(strstr(buf, "raptor_padding_ratio 0\n") != NULL);
  CHECK(strstr(buf, "raptor_queue_capacity 77\n") != NULL);
  CHECK(strstr(buf, "raptor_live_models 1\n") != NULL);
  CHECK(strstr(buf, "# TYPE raptor_queue_latency_seconds summary\n") != NULL);
  CHECK(strstr(buf, "raptor_submits_rejected_total{status=\"BUSY\"} 0\n") != NULL);
  /* every sample line: a raptor_ name, one space, a number */
  int lines_ok = 1;
  for (char* line = buf; *line; line = strchr(line, '\n') + 1) {
    if (line[0] == '#') continue;
    char* sp = strchr(line, ' ');
    char* end = NULL;
    if (strncmp(line, "raptor_", 7) != 0 || sp == NULL || (strtod(sp + 1, &end), *end != '\n')) lines_ok = 0;
  }
  CHECK(lines_ok);
  size_t untouched_len = 12345;
  EXPECT(RAPTOR_ERR_BUFFER_TOO_SMALL, raptor_engine_metrics_prometheus, (e, buf, 10, &untouched_len));
  CHECK(untouched_len == 12345);
  EXPECT(RAPTOR_ERR_BUFFER_TOO_SMALL, raptor_engine_metrics_prometheus, (e, buf, 0, &untouched_len));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_metrics_prometheus, (e, NULL, 10, &untouched_len));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_metrics_prometheus, (e, buf, cap, NULL));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_engine_metrics_prometheus, (NULL, buf, cap, &got));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_engine_metrics_prometheus, ((raptor_engine_t*)m, buf, cap, &got));
  CHECK(untouched_len == 12345);
  free(buf);
  raptor_engine_free(e);
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_engine_metrics_prometheus, (e, NULL, 0, &n));
}

/* ------------------------------------------------------------------ backpressure and shutdown */

/* Completion callbacks that block on the gate hold the deliverers; the
 * pipeline backs up behind them and later requests stay queued. */
typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int open;
  atomic_int entered, calls;
  atomic_int by_status[RAPTOR_STATUS_SLOTS];
} gate_t;

static void gate_cb(raptor_request_t* req, raptor_status_t st, void* ud) {
  (void)req;
  gate_t* g = ud;
  atomic_fetch_add(&g->entered, 1);
  pthread_mutex_lock(&g->mu);
  while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
  if (st >= 0 && st < RAPTOR_STATUS_SLOTS) atomic_fetch_add(&g->by_status[st], 1);
  atomic_fetch_add(&g->calls, 1);
}

static void gate_open(gate_t* g) {
  pthread_mutex_lock(&g->mu);
  g->open = 1;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

static void* open_later(void* arg) {
  sleep_ms(300);
  gate_open(arg);
  return NULL;
}

/* fill submits gated requests until one stays queued (the queue, of
 * capacity 1, is then full); returns how many were submitted. */
static int fill(raptor_engine_t* e, raptor_model_t* m, gate_t* g, batch_t* bt, float (*pooled)[HIDDEN],
                raptor_request_t** reqs, int max) {
  /* (with a larger capacity the queue holds one and has room for more) */
  int n = 0;
  while (n < max) {
    raptor_output_t o = outputs(NULL, 0, pooled[n], HIDDEN, RAPTOR_POOLING_MEAN);
    EXPECT(RAPTOR_OK, raptor_submit, (m, &bt->b, &o, gate_cb, g, &reqs[n]));
    n++;
    if (!wait_until(&g->entered, n, 200) && stats(e).queue_depth == 1) return n;
  }
  CHECK(!"the queue never filled");
  return n;
}

typedef struct {
  raptor_model_t* m;
  batch_t* bt;
  float* pooled;
  atomic_int returned;
  raptor_status_t st;
  raptor_request_t* r;
  done_state d;
} blocked_t;

static void* blocked_submit(void* arg) {
  blocked_t* b = arg;
  raptor_submit_options_t so;
  raptor_submit_options_default(&so);
  so.block_timeout_us = -1;
  raptor_output_t o = outputs(NULL, 0, b->pooled, HIDDEN, RAPTOR_POOLING_MEAN);
  b->st = raptor_submit_with_options(b->m, &b->bt->b, &o, &so, done_cb, &b->d, &b->r);
  atomic_store(&b->returned, 1);
  return NULL;
}

static void test_backpressure_and_cancel_shutdown(void) {
  enum { MAX = 64 };
  raptor_engine_t* e = new_engine(2, 0);
  raptor_model_t* m = load(e, "tiny-bert.raptor");
  int lens[] = {16};
  batch_t bt;
  batch_make(&bt, lens, 1, BERT_VOCAB);
  static float pooled[MAX + 4][HIDDEN];
  raptor_request_t* reqs[MAX];
  gate_t g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  int n = fill(e, m, &g, &bt, pooled, reqs, MAX);
  int in_callbacks = atomic_load(&g.entered); /* completed OK; the rest wait */

  /* A deadline passes in the queue: DEADLINE_EXCEEDED, a message, the callback once. */
  raptor_submit_options_t so;
  raptor_submit_options_default(&so);
  so.deadline_us = 20000;
  done_state dd = {0};
  raptor_request_t* r = NULL;
  raptor_output_t o = outputs(NULL, 0, pooled[MAX], HIDDEN, RAPTOR_POOLING_MEAN);
  EXPECT(RAPTOR_OK, raptor_submit_with_options, (m, &bt.b, &o, &so, done_cb, &dd, &r));
  raptor_status_t res = -1;
  EXPECT(RAPTOR_OK, raptor_request_wait, (r, -1, &res));
  CHECK(res == RAPTOR_ERR_DEADLINE_EXCEEDED);
  CHECK(strstr(raptor_request_error(r), "deadline") != NULL);
  CHECK(wait_until(&dd.calls, 1, 5000) && atomic_load(&dd.status) == RAPTOR_ERR_DEADLINE_EXCEEDED);
  raptor_request_free(r);
  CHECK(stats(e).queue_depth == 1);

  /* A filler makes the queue (capacity 2) full: BUSY at once, BUSY after block_timeout_us. */
  done_state df = {0};
  raptor_request_t* filler = NULL;
  EXPECT(RAPTOR_OK, raptor_submit, (m, &bt.b, &o, done_cb, &df, &filler));
  raptor_submit_options_default(&so);
  EXPECT(RAPTOR_ERR_BUSY, raptor_submit_with_options, (m, &bt.b, &o, &so, NULL, NULL, &r));
  so.block_timeout_us = 50000;
  double t0 = now_s();
  EXPECT(RAPTOR_ERR_BUSY, raptor_submit_with_options, (m, &bt.b, &o, &so, NULL, NULL, &r));
  CHECK(now_s() - t0 >= 0.045);
  CHECK(strstr(raptor_last_error(), "stayed full") != NULL);

  /* Without a limit: blocks until space frees (the queued request is cancelled). */
  blocked_t b = {.m = m, .bt = &bt, .pooled = pooled[MAX + 1]};
  pthread_t th;
  pthread_create(&th, NULL, blocked_submit, &b);
  sleep_ms(100);
  CHECK(atomic_load(&b.returned) == 0);
  EXPECT(RAPTOR_OK, raptor_request_cancel, (reqs[n - 1]));
  pthread_join(th, NULL);
  CHECK(b.st == RAPTOR_OK);

  /* Cancel shutdown while deliverers are blocked: returns once every callback
   * ran; those inside callbacks completed OK, every other one SHUTDOWN. */
  pthread_t opener;
  pthread_create(&opener, NULL, open_later, &g);
  EXPECT(RAPTOR_OK, raptor_engine_shutdown, (e, RAPTOR_SHUTDOWN_CANCEL, 0));
  pthread_join(opener, NULL);
  CHECK(atomic_load(&g.calls) == n);
  CHECK(atomic_load(&g.by_status[RAPTOR_OK]) == in_callbacks);
  CHECK(atomic_load(&g.by_status[RAPTOR_ERR_SHUTDOWN]) == n - 1 - in_callbacks);
  CHECK(atomic_load(&g.by_status[RAPTOR_ERR_CANCELLED]) == 1);
  CHECK(atomic_load(&b.d.calls) == 1 && atomic_load(&b.d.status) == RAPTOR_ERR_SHUTDOWN);
  CHECK(atomic_load(&df.calls) == 1 && atomic_load(&df.status) == RAPTOR_ERR_SHUTDOWN);

  /* After shutdown: new work gets SHUTDOWN; queries and frees work. */
  EXPECT(RAPTOR_ERR_SHUTDOWN, raptor_submit, (m, &bt.b, &o, NULL, NULL, &r));
  EXPECT(RAPTOR_ERR_SHUTDOWN, raptor_submit_with_options, (m, &bt.b, &o, NULL, NULL, NULL, &r));
  EXPECT(RAPTOR_ERR_SHUTDOWN, raptor_encode, (m, &bt.b, &o));
  char path[4200];
  snprintf(path, sizeof path, "%s/tiny-bert.raptor", dir);
  raptor_model_t* m2 = NULL;
  EXPECT(RAPTOR_ERR_SHUTDOWN, raptor_model_load, (e, path, &m2));
  EXPECT(RAPTOR_OK, raptor_request_wait, (reqs[0], 0, &res));
  CHECK(res == RAPTOR_OK);
  EXPECT(RAPTOR_OK, raptor_engine_shutdown, (e, RAPTOR_SHUTDOWN_DRAIN, -1)); /* again: OK */
  raptor_engine_stats_t s = stats(e);
  CHECK(s.queue_depth == 0 && s.completed_by_status[RAPTOR_ERR_SHUTDOWN] == (uint64_t)(n + 1 - in_callbacks));
  CHECK(s.completed_by_status[RAPTOR_ERR_DEADLINE_EXCEEDED] == 1 && s.completed_by_status[RAPTOR_ERR_CANCELLED] == 1);
  CHECK(s.rejected_by_status[RAPTOR_ERR_BUSY] == 2 && s.rejected_by_status[RAPTOR_ERR_SHUTDOWN] == 2);
  raptor_request_free(b.r);
  raptor_request_free(filler);
  raptor_engine_free(e);
}

typedef struct {
  raptor_engine_t* e;
  atomic_int calls;
  raptor_status_t st;
  char msg[256];
} shut_in_cb;

static void shutdown_cb(raptor_request_t* req, raptor_status_t st, void* ud) {
  (void)req;
  (void)st;
  shut_in_cb* s = ud;
  s->st = raptor_engine_shutdown(s->e, RAPTOR_SHUTDOWN_DRAIN, -1);
  snprintf(s->msg, sizeof s->msg, "%s", raptor_last_error());
  atomic_fetch_add(&s->calls, 1);
}

static void test_drain_shutdown(void) {
  enum { N = 40 };
  /* Drain: every queued request completes normally (no queue delay wait). */
  raptor_engine_t* e = new_engine(0, 10 * 1000000);
  raptor_model_t* m = load(e, "tiny-bigbird.raptor");
  int lens[] = {40, 90};
  batch_t bt;
  batch_make(&bt, lens, 2, BIGBIRD_VOCAB);
  static float pooled[N][2 * HIDDEN];
  static done_state d[N];
  memset(d, 0, sizeof d);
  for (int i = 0; i < N; i++) {
    raptor_output_t o = outputs(NULL, 0, pooled[i], 2 * HIDDEN, RAPTOR_POOLING_MEAN);
    raptor_request_t* r;
    EXPECT(RAPTOR_OK, raptor_submit, (m, &bt.b, &o, done_cb, &d[i], &r));
  }
  double t0 = now_s();
  EXPECT(RAPTOR_OK, raptor_engine_shutdown, (e, RAPTOR_SHUTDOWN_DRAIN, -1));
  CHECK(now_s() - t0 < 9.0); /* the 10 s queue delay did not hold the batches */
  for (int i = 0; i < N; i++) CHECK(atomic_load(&d[i].calls) == 1 && atomic_load(&d[i].status) == RAPTOR_OK);
  CHECK(memcmp(pooled[0], pooled[N - 1], sizeof pooled[0]) == 0);
  raptor_engine_free(e);

  /* Drain that times out: TIMEOUT, the rest SHUTDOWN. */
  e = new_engine(1, 0);
  m = load(e, "tiny-bert.raptor");
  int l16[] = {16};
  batch_make(&bt, l16, 1, BERT_VOCAB);
  static float gp[70][HIDDEN];
  raptor_request_t* reqs[64];
  gate_t g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  int n = fill(e, m, &g, &bt, gp, reqs, 64);
  int in_callbacks = atomic_load(&g.entered);
  pthread_t opener;
  pthread_create(&opener, NULL, open_later, &g);
  t0 = now_s();
  EXPECT(RAPTOR_ERR_TIMEOUT, raptor_engine_shutdown, (e, RAPTOR_SHUTDOWN_DRAIN, 50000));
  CHECK(now_s() - t0 >= 0.2); /* it returned after the callbacks (the gate opens at 300 ms) */
  pthread_join(opener, NULL);
  CHECK(atomic_load(&g.calls) == n && atomic_load(&g.by_status[RAPTOR_OK]) >= in_callbacks);
  CHECK(atomic_load(&g.by_status[RAPTOR_OK]) + atomic_load(&g.by_status[RAPTOR_ERR_SHUTDOWN]) == n);
  CHECK(atomic_load(&g.by_status[RAPTOR_ERR_SHUTDOWN]) >= 1);
  raptor_engine_free(e);

  /* Bad inputs, and the call from a completion callback. */
  e = new_engine(0, 0);
  m = load(e, "tiny-bert.raptor");
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_engine_shutdown, (NULL, RAPTOR_SHUTDOWN_DRAIN, 0));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_engine_shutdown, ((raptor_engine_t*)m, RAPTOR_SHUTDOWN_DRAIN, 0));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_shutdown, (e, 2, 0));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_shutdown, (e, -1, 0));
  shut_in_cb sc = {.e = e};
  float p1[HIDDEN];
  raptor_output_t o = outputs(NULL, 0, p1, HIDDEN, RAPTOR_POOLING_MEAN);
  raptor_request_t* r = NULL;
  EXPECT(RAPTOR_OK, raptor_submit, (m, &bt.b, &o, shutdown_cb, &sc, &r));
  CHECK(wait_until(&sc.calls, 1, 5000));
  CHECK(sc.st == RAPTOR_ERR_INVALID_ARGUMENT && strstr(sc.msg, "raptor_engine_shutdown") != NULL);
  raptor_status_t res = -1;
  EXPECT(RAPTOR_OK, raptor_encode, (m, &bt.b, &o)); /* still running */
  EXPECT(RAPTOR_OK, raptor_request_wait, (r, -1, &res));
  raptor_request_free(r);
  raptor_engine_free(e);
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_engine_shutdown, (e, RAPTOR_SHUTDOWN_CANCEL, 0)); /* freed */
}

/* ------------------------------------------------------------------ warm-up */

/* raptor_model_warmup: the params filler, bad handles and params, one batch
 * on the CPU, SHUTDOWN after raptor_engine_shutdown. */
static void test_warmup(void) {
  raptor_warmup_params_t p;
  memset(&p, 0x5a, sizeof p);
  raptor_warmup_params_default(&p);
  CHECK(p.struct_size == sizeof p && p.max_tokens == 0 && p.pooled == 1 && p.pooling == RAPTOR_POOLING_MEAN &&
        p.hidden == 0 && p.token_type_ids == 0 && p.seeds == 0 && p.normalize == 0);
  raptor_warmup_params_default(NULL);

  raptor_engine_t* e = new_engine(0, -1);
  raptor_model_t* bert = load(e, "tiny-bert.raptor");
  raptor_model_t* bigbird = load(e, "tiny-bigbird.raptor");
  int64_t n = -7;
  EXPECT(RAPTOR_OK, raptor_model_warmup, (bert, NULL, &n));
  CHECK(n == 1); /* the CPU runs one small batch */
  EXPECT(RAPTOR_OK, raptor_model_warmup, (bert, &p, NULL));
  p.hidden = 1;
  p.pooled = 0;
  p.token_type_ids = 1;
  p.seeds = 1;
  p.max_tokens = 100;
  EXPECT(RAPTOR_OK, raptor_model_warmup, (bigbird, &p, &n));
  CHECK(n == 1);

  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_model_warmup, (NULL, &p, &n));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_model_warmup, ((raptor_model_t*)e, &p, &n));
  raptor_warmup_params_default(&p);
  p.struct_size = 8;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_model_warmup, (bert, &p, &n));
  raptor_warmup_params_default(&p);
  p.max_tokens = -1;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_model_warmup, (bert, &p, &n));
  CHECK(strstr(raptor_last_error(), "max_tokens") != NULL);
  raptor_warmup_params_default(&p);
  p.pooled = 0;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_model_warmup, (bert, &p, &n));
  raptor_warmup_params_default(&p);
  p.pooling = 3;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_model_warmup, (bert, &p, &n));
  raptor_warmup_params_default(&p);
  p.pooling = RAPTOR_POOLING_POOLER;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_model_warmup, (bigbird, &p, &n)); /* no pooler */
  CHECK(strstr(raptor_last_error(), "pooler") != NULL);
  EXPECT(RAPTOR_OK, raptor_model_warmup, (bert, &p, &n));
  CHECK(n == 1);

  EXPECT(RAPTOR_OK, raptor_engine_shutdown, (e, RAPTOR_SHUTDOWN_DRAIN, -1));
  EXPECT(RAPTOR_ERR_SHUTDOWN, raptor_model_warmup, (bert, NULL, &n));
  raptor_model_free(bert);
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_model_warmup, (bert, NULL, &n));
  raptor_engine_free(e);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s TESTMODELS_DIR\n", argv[0]);
    return 2;
  }
  snprintf(dir, sizeof dir, "%s", argv[1]);
  raptor_set_log_callback(NULL, RAPTOR_LOG_WARN, NULL);
  struct {
    const char* name;
    void (*fn)(void);
  } tests[] = {
      {"submit options", test_submit_options},
      {"merged batches", test_merged_batches},
      {"stats and metrics", test_stats_and_metrics},
      {"backpressure, cancel shutdown", test_backpressure_and_cancel_shutdown},
      {"drain shutdown", test_drain_shutdown},
      {"warm-up", test_warmup},
  };
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    int before = atomic_load(&failures);
    double t0 = now_s();
    tests[i].fn();
    fprintf(stderr, "%-4s %s (%.2fs)\n", atomic_load(&failures) == before ? "ok" : "FAIL", tests[i].name, now_s() - t0);
  }
  fprintf(stderr, "%d checks, %d failures\n", atomic_load(&checks), atomic_load(&failures));
  return atomic_load(&failures) == 0 ? 0 : 1;
}
