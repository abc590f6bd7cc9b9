/*
 * soak: steady mixed load on the C ABI from many threads, for a bounded time.
 *
 * Usage: soak MODEL_DIR SECONDS [THREADS]   (THREADS default 8)
 *
 * Each worker thread loops over a random mix of: synchronous encodes of
 * random batches; asynchronous submits with a completion callback (waited,
 * polled, cancelled, or freed while pending); model load/free (from file and
 * from memory) with requests still queued on the model; engine create/free
 * with requests still queued on the engine. Checked throughout:
 *  - every result that completes with RAPTOR_OK is bit for bit the pooled
 *    vector of its sequences encoded alone at the start (CPU: batch
 *    invariance is exact);
 *  - every accepted request's callback runs exactly once, with the status
 *    raptor_request_wait reports; engine and model frees return only after
 *    their requests' callbacks ran;
 *  - statuses are only those the header allows for each call;
 *  - at the end, process handles and goroutines are back at the baseline,
 *    and resident memory and the Go heap are flat: the last sample is within
 *    bounds of the first sample after warm-up (printed every few seconds).
 *
 * RAPTOR_TEST_BACKEND=cuda: every engine runs on the GPU (MODEL_DIR then holds
 * models the CUDA backend runs: `mkmodel -gpu`); results then equal the
 * references within rounding (relative 2e-2, as the header allows on the GPU)
 * instead of bit for bit. Device memory is sampled from outside (tests/gpu/run.sh).
 */
#define _GNU_SOURCE
#include <raptor.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int failures;
#define CHECK(cond)                                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      if (atomic_fetch_add(&failures, 1) < 20)                                        \
        fprintf(stderr, "FAIL %s:%d: %s (%s)\n", __FILE__, __LINE__, #cond, raptor_last_error()); \
    }                                                                                 \
  } while (0)

enum { NREF = 48, HID = 32, MAXB = 6 };

static char bert_path[4096];
static unsigned char* image;
static size_t image_size;
static raptor_engine_t* main_engine;
static raptor_model_t* main_model;
static int32_t* ref_ids[NREF];
static int ref_len[NREF];
static float ref_pooled[NREF][HID];
static int vocab;
static int32_t backend = RAPTOR_BACKEND_CPU;
static int on_gpu;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static long rss_kb(void) {
  FILE* f = fopen("/proc/self/statm", "r");
  long pages = 0, rss = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
    fclose(f);
  }
  return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static uint64_t splitmix(uint64_t* s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* ------------------------------------------------------------------ one request */

typedef struct job {
  raptor_batch_t b;
  raptor_output_t o;
  int32_t ids[MAXB * 128];
  int32_t cu[MAXB + 1];
  int refs[MAXB];
  int nseq;
  float pooled[MAXB * HID];
  atomic_int calls;          /* completion callbacks run */
  atomic_int cb_status;
  int with_cb;
  struct job* next;
} job_t;

static atomic_long submitted_cb, submitted, callbacks, ok_results, cancelled, shutdown_results, busy, sync_encodes, model_cycles,
    engine_cycles;

static void make_job(job_t* j, uint64_t* rng) {
  memset(j, 0, sizeof *j);
  j->nseq = 1 + (int)(splitmix(rng) % MAXB);
  int t = 0;
  j->cu[0] = 0;
  for (int s = 0; s < j->nseq; s++) {
    int r = (int)(splitmix(rng) % NREF);
    j->refs[s] = r;
    memcpy(j->ids + t, ref_ids[r], (size_t)ref_len[r] * 4);
    t += ref_len[r];
    j->cu[s + 1] = t;
  }
  raptor_batch_default(&j->b);
  j->b.token_ids = j->ids;
  j->b.num_tokens = (size_t)t;
  j->b.cu_seqlens = j->cu;
  j->b.num_seqs = (size_t)j->nseq;
  raptor_output_default(&j->o);
  j->o.pooled = j->pooled;
  j->o.pooled_bytes = sizeof(float) * (size_t)(j->nseq * HID);
  atomic_store(&j->cb_status, -1);
}

static int close_to_ref(const float* got, const float* want) {
  if (!on_gpu) return memcmp(got, want, HID * sizeof(float)) == 0;
  double num = 0, den = 0;
  for (int i = 0; i < HID; i++) {
    double d = (double)got[i] - (double)want[i];
    num += d * d;
    den += (double)want[i] * (double)want[i];
  }
  return num <= 4e-4 * (den > 1e-30 ? den : 1e-30); /* relative L2 error <= 2e-2 */
}

static void check_job(const job_t* j) {
  for (int s = 0; s < j->nseq; s++) CHECK(close_to_ref(j->pooled + s * HID, ref_pooled[j->refs[s]]));
}

static void on_done(raptor_request_t* req, raptor_status_t st, void* ud) {
  (void)req;
  job_t* j = ud;
  atomic_store(&j->cb_status, st);
  atomic_fetch_add(&j->calls, 1);
  atomic_fetch_add(&callbacks, 1);
}

/* submit j on m, retrying while BUSY; returns the status of raptor_submit. */
static raptor_status_t submit(raptor_model_t* m, job_t* j, int with_cb, raptor_request_t** req) {
  for (;;) {
    raptor_status_t st = raptor_submit(m, &j->b, &j->o, with_cb ? on_done : NULL, j, req);
    if (st == RAPTOR_OK) {
      j->with_cb = with_cb;
      if (with_cb) atomic_fetch_add(&submitted_cb, 1);
    }
    if (st != RAPTOR_ERR_BUSY) return st;
    atomic_fetch_add(&busy, 1);
    usleep(200);
  }
}

/* ------------------------------------------------------------------ workers */

static double deadline;

typedef struct {
  int id;
  job_t* done; /* jobs with callbacks, checked at the end */
} worker_t;

static void keep(worker_t* w, job_t* j) {
  j->next = w->done;
  w->done = j;
}

/* check_reaped checks a job whose callback ran, and frees it. */
static void check_reaped(job_t* j) {
  CHECK(atomic_load(&j->calls) == 1);
  raptor_status_t st = atomic_load(&j->cb_status);
  CHECK(st == RAPTOR_OK || st == RAPTOR_ERR_CANCELLED || st == RAPTOR_ERR_SHUTDOWN);
  if (st == RAPTOR_OK) check_job(j);
  free(j);
}

/* reap frees the kept jobs whose callback ran (a callback never runs twice:
 * checked at the end on the ones still kept, and by the callbacks count). */
static void reap(worker_t* w) {
  job_t** p = &w->done;
  while (*p) {
    job_t* j = *p;
    if (atomic_load(&j->calls) >= 1) {
      *p = j->next;
      check_reaped(j);
    } else {
      p = &j->next;
    }
  }
}

static void* worker(void* arg) {
  worker_t* w = arg;
  uint64_t rng = 0x1234u + (uint64_t)w->id * 7919u;
  while (now_s() < deadline && atomic_load(&failures) == 0) {
    reap(w);
    unsigned op = (unsigned)(splitmix(&rng) % 100);
    if (op < 30) { /* synchronous encode */
      job_t* j = malloc(sizeof *j);
      make_job(j, &rng);
      CHECK(raptor_encode(main_model, &j->b, &j->o) == RAPTOR_OK);
      check_job(j);
      atomic_fetch_add(&sync_encodes, 1);
      free(j);
    } else if (op < 80) { /* asynchronous, on the main model */
      job_t* j = malloc(sizeof *j);
      make_job(j, &rng);
      raptor_request_t* req = NULL;
      unsigned how = (unsigned)(splitmix(&rng) % 10);
      int with_cb = op < 70 || how == 9; /* freed while pending: only with a callback, to know when it is done */
      raptor_status_t st = submit(main_model, j, with_cb, &req);
      CHECK(st == RAPTOR_OK);
      if (st != RAPTOR_OK) {
        free(j);
        continue;
      }
      atomic_fetch_add(&submitted, 1);
      raptor_status_t res = -1;
      if (how < 5) {
        CHECK(raptor_request_wait(req, -1, &res) == RAPTOR_OK);
      } else if (how < 7) { /* poll until done */
        int32_t done = 0;
        while (!done) {
          CHECK(raptor_request_poll(req, &done, &res) == RAPTOR_OK);
          if (!done) usleep(100);
        }
      } else if (how < 9) { /* cancel, then wait */
        CHECK(raptor_request_cancel(req) == RAPTOR_OK);
        CHECK(raptor_request_wait(req, -1, &res) == RAPTOR_OK);
        CHECK(res == RAPTOR_OK || res == RAPTOR_ERR_CANCELLED);
      } else { /* free while pending: cancelled, the callback still runs once */
        raptor_request_free(req);
        req = NULL;
        keep(w, j); /* its output buffer must outlive the request: kept until its callback ran */
        continue;
      }
      if (res == RAPTOR_OK) {
        check_job(j);
        atomic_fetch_add(&ok_results, 1);
      } else {
        CHECK(res == RAPTOR_ERR_CANCELLED);
        CHECK(strlen(raptor_request_error(req)) > 0);
        atomic_fetch_add(&cancelled, 1);
      }
      raptor_request_free(req);
      if (with_cb) {
        keep(w, j); /* the callback may still be running: check it at the end */
      } else {
        free(j);
      }
    } else if (op < 92) { /* a model loaded, used and freed with requests pending */
      raptor_model_t* m = NULL;
      raptor_status_t st = (op & 1) ? raptor_model_load(main_engine, bert_path, &m)
                                    : raptor_model_load_from_memory(main_engine, image, image_size, &m);
      CHECK(st == RAPTOR_OK);
      if (st != RAPTOR_OK) continue;
      job_t* js[3];
      raptor_request_t* rs[3];
      for (int i = 0; i < 3; i++) {
        js[i] = malloc(sizeof *js[i]);
        make_job(js[i], &rng);
        CHECK(submit(m, js[i], 1, &rs[i]) == RAPTOR_OK);
        atomic_fetch_add(&submitted, 1);
      }
      raptor_model_free(m); /* pending requests complete (SHUTDOWN) before this returns */
      for (int i = 0; i < 3; i++) {
        CHECK(atomic_load(&js[i]->calls) == 1);
        raptor_status_t res = -1;
        CHECK(raptor_request_wait(rs[i], -1, &res) == RAPTOR_OK);
        CHECK(res == atomic_load(&js[i]->cb_status));
        CHECK(res == RAPTOR_OK || res == RAPTOR_ERR_SHUTDOWN || res == RAPTOR_ERR_CANCELLED);
        if (res == RAPTOR_OK) check_job(js[i]);
        if (res == RAPTOR_ERR_SHUTDOWN) atomic_fetch_add(&shutdown_results, 1);
        raptor_request_free(rs[i]);
        free(js[i]);
      }
      atomic_fetch_add(&model_cycles, 1);
    } else { /* an engine created, used and freed with requests pending */
      raptor_engine_options_t o;
      raptor_engine_options_default(&o);
      o.backend = backend;
      o.worker_threads = 1;
      raptor_engine_t* e = NULL;
      raptor_model_t* m = NULL;
      CHECK(raptor_engine_create(&o, &e) == RAPTOR_OK);
      CHECK(raptor_model_load_from_memory(e, image, image_size, &m) == RAPTOR_OK);
      job_t* js[4];
      raptor_request_t* rs[4];
      for (int i = 0; i < 4; i++) {
        js[i] = malloc(sizeof *js[i]);
        make_job(js[i], &rng);
        CHECK(submit(m, js[i], 1, &rs[i]) == RAPTOR_OK);
        atomic_fetch_add(&submitted, 1);
      }
      job_t sj;
      make_job(&sj, &rng);
      CHECK(raptor_encode(m, &sj.b, &sj.o) == RAPTOR_OK);
      check_job(&sj);
      raptor_engine_free(e); /* frees m and completes the requests first */
      for (int i = 0; i < 4; i++) {
        CHECK(atomic_load(&js[i]->calls) == 1);
        raptor_status_t res = atomic_load(&js[i]->cb_status);
        CHECK(res == RAPTOR_OK || res == RAPTOR_ERR_SHUTDOWN);
        if (res == RAPTOR_OK) check_job(js[i]);
        if (res == RAPTOR_ERR_SHUTDOWN) atomic_fetch_add(&shutdown_results, 1);
        /* the request handles went with the engine: detected, not dereferenced */
        CHECK(raptor_request_poll(rs[i], &(int32_t){0}, NULL) == RAPTOR_ERR_INVALID_HANDLE);
        raptor_request_free(rs[i]);
        free(js[i]);
      }
      atomic_fetch_add(&engine_cycles, 1);
    }
  }
  return NULL;
}

/* ------------------------------------------------------------------ main */

static raptor_engine_stats_t stats_of(raptor_engine_t* e) {
  raptor_engine_stats_t s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  CHECK(raptor_engine_get_stats(e, &s) == RAPTOR_OK);
  return s;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: soak MODEL_DIR SECONDS [THREADS]\n");
    return 2;
  }
  double seconds = atof(argv[2]);
  int nthreads = argc > 3 ? atoi(argv[3]) : 8;
  snprintf(bert_path, sizeof bert_path, "%s/tiny-bert.raptor", argv[1]);
  FILE* f = fopen(bert_path, "rb");
  if (!f) {
    fprintf(stderr, "soak: cannot open %s\n", bert_path);
    return 2;
  }
  fseek(f, 0, SEEK_END);
  image_size = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  image = malloc(image_size);
  if (fread(image, 1, image_size, f) != image_size) return 2;
  fclose(f);
  raptor_set_log_callback(NULL, RAPTOR_LOG_WARN, NULL);
  const char* be = getenv("RAPTOR_TEST_BACKEND");
  if (be && strcmp(be, "cuda") == 0) backend = RAPTOR_BACKEND_CUDA, on_gpu = 1;

  raptor_engine_options_t o;
  raptor_engine_options_default(&o);
  o.backend = RAPTOR_BACKEND_CPU;
  o.queue_capacity = 64;
  raptor_engine_t* probe = NULL;
  CHECK(raptor_engine_create(&o, &probe) == RAPTOR_OK);
  raptor_engine_stats_t base = stats_of(probe);
  o.backend = backend;
  CHECK(raptor_engine_create(&o, &main_engine) == RAPTOR_OK);
  if (on_gpu) printf("soak: engines on backend %s\n", raptor_engine_backend(main_engine));
  CHECK(raptor_model_load(main_engine, bert_path, &main_model) == RAPTOR_OK);
  raptor_model_info_t info;
  info.struct_size = sizeof info;
  CHECK(raptor_model_get_info(main_model, &info) == RAPTOR_OK);
  if (failures || info.hidden_size != HID) {
    fprintf(stderr, "soak: setup failed (hidden %d)\n", info.hidden_size);
    return 1;
  }
  vocab = info.vocab_size;

  /* The reference sequences, each encoded alone. */
  uint64_t rng = 42;
  for (int r = 0; r < NREF; r++) {
    ref_len[r] = r % 8 == 0 ? info.max_sequence_length - (int)(splitmix(&rng) % 4) : 1 + (int)(splitmix(&rng) % 60);
    ref_ids[r] = malloc((size_t)ref_len[r] * 4);
    for (int i = 0; i < ref_len[r]; i++) ref_ids[r][i] = (int32_t)(splitmix(&rng) % (uint64_t)vocab);
    int32_t cu[2] = {0, ref_len[r]};
    raptor_batch_t b;
    raptor_batch_default(&b);
    b.token_ids = ref_ids[r];
    b.num_tokens = (size_t)ref_len[r];
    b.cu_seqlens = cu;
    b.num_seqs = 1;
    raptor_output_t out;
    raptor_output_default(&out);
    out.pooled = ref_pooled[r];
    out.pooled_bytes = sizeof ref_pooled[r];
    CHECK(raptor_encode(main_model, &b, &out) == RAPTOR_OK);
  }

  deadline = now_s() + seconds;
  pthread_t th[64];
  worker_t ws[64];
  if (nthreads > 64) nthreads = 64;
  double t0 = now_s();
  for (int i = 0; i < nthreads; i++) {
    ws[i].id = i;
    ws[i].done = NULL;
    pthread_create(&th[i], NULL, worker, &ws[i]);
  }
  /* Samples: every `every` seconds; the first after warm-up (10% of the run). */
  double every = seconds >= 60 ? 10 : seconds >= 20 ? 5 : 2;
  long rss_warm = 0, rss_last = 0, rss_max = 0;
  int64_t heap_warm = 0, heap_last = 0, heap_max = 0;
  printf("%8s %10s %12s %6s %8s %10s %10s\n", "t_s", "rss_kb", "go_heap_b", "gorout", "handles", "submitted", "callbacks");
  for (double next = t0 + every; now_s() < deadline && failures == 0; next += every) {
    while (now_s() < next && now_s() < deadline) usleep(50000);
    raptor_engine_stats_t s = stats_of(probe);
    long rss = rss_kb();
    printf("%8.1f %10ld %12lld %6lld %8lld %10ld %10ld\n", now_s() - t0, rss, (long long)s.process_heap_bytes,
           (long long)s.process_goroutines, (long long)s.process_handles, atomic_load(&submitted), atomic_load(&callbacks));
    fflush(stdout);
    if (rss_warm == 0 && now_s() - t0 >= 0.1 * seconds) {
      rss_warm = rss;
      heap_warm = s.process_heap_bytes;
    }
    rss_last = rss;
    heap_last = s.process_heap_bytes;
    if (rss > rss_max) rss_max = rss;
    if (s.process_heap_bytes > heap_max) heap_max = s.process_heap_bytes;
  }
  for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
  double elapsed = now_s() - t0;

  /* Freed-while-pending requests: their callbacks (or the engine's drain)
   * complete them; wait for the main engine's queue to drain. */
  for (int i = 0; i < 500; i++) {
    raptor_engine_stats_t s = stats_of(main_engine);
    if (s.queue_depth == 0 && s.live_requests == 0) break;
    usleep(10000);
  }
  raptor_model_free(main_model);
  raptor_engine_free(main_engine);
  long jobs = 0;
  for (int i = 0; i < nthreads; i++) {
    for (job_t *j = ws[i].done, *n; j; j = n) {
      n = j->next;
      CHECK(j->with_cb);
      jobs++;
      check_reaped(j); /* every callback has run by now: the engine was freed */
    }
  }

  raptor_engine_stats_t end = stats_of(probe);
  for (int i = 0; i < 200 && end.process_goroutines > base.process_goroutines + 2; i++) {
    usleep(20000);
    end = stats_of(probe);
  }
  CHECK(end.process_handles == base.process_handles);
  CHECK(end.process_goroutines <= base.process_goroutines + 2);
  CHECK(atomic_load(&callbacks) == atomic_load(&submitted_cb));
  /* Flat memory: after warm-up, RSS grows by less than 25% + 16 MiB and the
   * Go heap stays under twice its warm value + 16 MiB (garbage not yet
   * collected counts in it). */
#if defined(__SANITIZE_ADDRESS__)
  /* ASan keeps freed memory in its quarantine (256 MiB by default): RSS grows
   * by design there, so only the Go heap is held flat. */
  const int check_rss = 0;
#else
  const int check_rss = 1;
#endif
  if (rss_warm > 0) {
    if (check_rss) CHECK(rss_last <= rss_warm + rss_warm / 4 + 16384);
    CHECK(heap_last <= 2 * heap_warm + (16 << 20));
  }
  printf("soak: %.0f s, %d threads: %ld sync encodes, %ld submitted (%ld OK waited/polled, %ld cancelled, %ld SHUTDOWN "
         "by a model/engine free), %ld callbacks, %ld BUSY retries, %ld model load/free cycles, %ld engine create/free "
         "cycles\n",
         elapsed, nthreads, atomic_load(&sync_encodes), atomic_load(&submitted), atomic_load(&ok_results),
         atomic_load(&cancelled), atomic_load(&shutdown_results), atomic_load(&callbacks), atomic_load(&busy),
         atomic_load(&model_cycles), atomic_load(&engine_cycles));
  printf("soak: RSS warm %ld kB, last %ld kB, max %ld kB; Go heap warm %lld, last %lld, max %lld bytes; handles %lld -> "
         "%lld; goroutines %lld -> %lld; %d failures\n",
         rss_warm, rss_last, rss_max, (long long)heap_warm, (long long)heap_last, (long long)heap_max,
         (long long)base.process_handles, (long long)end.process_handles, (long long)base.process_goroutines,
         (long long)end.process_goroutines, atomic_load(&failures));
  raptor_engine_free(probe);
  for (int r = 0; r < NREF; r++) free(ref_ids[r]);
  free(image);
  return failures ? 1 : 0;
}
