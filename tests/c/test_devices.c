/* Several devices in one engine through the C ABI (issue 10):
 * raptor_engine_options_init and the appended device fields (devices,
 * num_devices, all_devices), the v1 options size still accepted, every bad
 * device selection (NULL list with a count, empty list, repeated, negative
 * and out-of-range ordinals, list and all_devices together) answered with
 * its status and a message and no engine, raptor_engine_device_count,
 * raptor_engine_get_device_stats (weights once per device, requests spread
 * over the devices, bad indexes and sizes), the per-device Prometheus lines,
 * and outputs of a three-device engine bit-identical to a one-device one,
 * every request completing exactly once. On the CPU backend each listed
 * ordinal is one CPU replica standing for a GPU.
 *
 * Usage: test_devices DIR   (DIR holds tiny-bert.raptor, from tests/tools/mkmodel). */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raptor.h"
#include "test_check.h"

_Static_assert(RAPTOR_ENGINE_OPTIONS_V1_SIZE == offsetof(raptor_engine_options_t, kernel_cache_dir) + sizeof(void*),
               "options v1 size");
_Static_assert(RAPTOR_MAX_DEVICES == 64, "max devices");

enum { HIDDEN = 32, VOCAB = 79, NREQ = 40 };
static char dir[4096];

static raptor_engine_t* create(const int32_t* devs, size_t n, int32_t all, raptor_status_t want, int line) {
  raptor_engine_options_t o;
  raptor_engine_options_init(&o, sizeof o);
  o.backend = RAPTOR_BACKEND_CPU;
  o.worker_threads = 2;
  o.max_batch_tokens = 64;
  o.max_queue_delay_us = 20000;
  o.devices = devs;
  o.num_devices = n;
  o.all_devices = all;
  raptor_engine_t* const sentinel = (raptor_engine_t*)(uintptr_t)0x5e1;
  raptor_engine_t* e = sentinel;
  expect(raptor_engine_create(&o, &e), want, "raptor_engine_create", "raptor_engine_create(devices)", line);
  if (want != RAPTOR_OK) {
    CHECK(e == sentinel); /* untouched on error */
    return NULL;
  }
  return e;
}

static raptor_model_t* load(raptor_engine_t* e) {
  char path[4200];
  snprintf(path, sizeof path, "%s/tiny-bert.raptor", dir);
  raptor_model_t* m = NULL;
  EXPECT(RAPTOR_OK, raptor_model_load, (e, path, &m));
  return m;
}

static void test_options(void) {
  raptor_engine_options_t o;
  memset(&o, 0xab, sizeof o);
  raptor_engine_options_default(&o); /* v1 fields only */
  CHECK(o.struct_size == RAPTOR_ENGINE_OPTIONS_V1_SIZE);
  CHECK(o.backend == RAPTOR_BACKEND_AUTO && o.device == 0 && o.kernel_cache_dir == NULL);
  unsigned char* tail = (unsigned char*)&o + RAPTOR_ENGINE_OPTIONS_V1_SIZE;
  CHECK(tail[0] == 0xab); /* the appended fields are not written by the v1 filler */

  memset(&o, 0xab, sizeof o);
  raptor_engine_options_init(&o, sizeof o);
  CHECK(o.struct_size == sizeof o && o.devices == NULL && o.num_devices == 0 && o.all_devices == 0);
  CHECK(o.max_batch_tokens == 16384 && o.queue_capacity == 1024);

  raptor_engine_options_t u;
  memset(&u, 0xcd, sizeof u);
  raptor_engine_options_init(&u, sizeof u - 4); /* unknown size: untouched */
  CHECK(u.struct_size == (size_t)0xcdcdcdcdcdcdcdcdull || sizeof(size_t) != 8);
  raptor_engine_options_init(NULL, sizeof u); /* ignored */

  /* A v1-size struct (a host built against the old header) still works: one device. */
  raptor_engine_options_t v1;
  raptor_engine_options_default(&v1);
  v1.backend = RAPTOR_BACKEND_CPU;
  raptor_engine_t* e = NULL;
  EXPECT(RAPTOR_OK, raptor_engine_create, (&v1, &e));
  int32_t n = -1;
  EXPECT(RAPTOR_OK, raptor_engine_device_count, (e, &n));
  CHECK(n == 1);
  raptor_engine_free(e);

  /* A size between v1 and the current one, or beyond: refused. */
  raptor_engine_options_t bad;
  raptor_engine_options_init(&bad, sizeof bad);
  bad.struct_size = RAPTOR_ENGINE_OPTIONS_V1_SIZE + 8;
  e = NULL;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_create, (&bad, &e));
  CHECK(e == NULL && strstr(raptor_last_error(), "raptor_engine_options_t") != NULL);
}

static void test_bad_selections(void) {
  int32_t dup[] = {0, 1, 0}, neg[] = {0, -1}, big[] = {0, RAPTOR_MAX_DEVICES}, one[] = {0};
  int32_t many[RAPTOR_MAX_DEVICES + 1];
  for (int i = 0; i <= RAPTOR_MAX_DEVICES; i++) many[i] = i;
  create(NULL, 2, 0, RAPTOR_ERR_INVALID_ARGUMENT, __LINE__);    /* NULL list with a count */
  CHECK(strstr(raptor_last_error(), "NULL") != NULL);
  create(one, 0, 0, RAPTOR_ERR_INVALID_ARGUMENT, __LINE__);     /* empty list */
  CHECK(strstr(raptor_last_error(), "empty") != NULL);
  create(dup, 3, 0, RAPTOR_ERR_INVALID_ARGUMENT, __LINE__);     /* repeated ordinal */
  CHECK(strstr(raptor_last_error(), "repeats ordinal 0") != NULL);
  create(neg, 2, 0, RAPTOR_ERR_INVALID_ARGUMENT, __LINE__);     /* negative ordinal */
  CHECK(strstr(raptor_last_error(), "negative") != NULL);
  create(big, 2, 0, RAPTOR_ERR_OUT_OF_RANGE, __LINE__);         /* ordinal beyond RAPTOR_MAX_DEVICES */
  create(many, RAPTOR_MAX_DEVICES + 1, 0, RAPTOR_ERR_OUT_OF_RANGE, __LINE__); /* too many */
  create(one, 1, 1, RAPTOR_ERR_INVALID_ARGUMENT, __LINE__);     /* list and all_devices */
  CHECK(strstr(raptor_last_error(), "all") != NULL);

  raptor_engine_options_t o;
  raptor_engine_options_init(&o, sizeof o);
  o.backend = RAPTOR_BACKEND_CPU;
  o.device = RAPTOR_MAX_DEVICES; /* the single ordinal is bounded too */
  raptor_engine_t* e = NULL;
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_engine_create, (&o, &e));
  CHECK(e == NULL);

  /* all_devices on the CPU backend: one device. */
  e = create(NULL, 0, 1, RAPTOR_OK, __LINE__);
  int32_t n = 0;
  EXPECT(RAPTOR_OK, raptor_engine_device_count, (e, &n));
  CHECK(n == 1);
  raptor_engine_free(e);
}

typedef struct {
  atomic_int calls;
} done_state;

static void done_cb(raptor_request_t* req, raptor_status_t st, void* ud) {
  (void)req;
  (void)st;
  atomic_fetch_add(&((done_state*)ud)->calls, 1);
}

static void test_three_devices(void) {
  int32_t devs[] = {2, 0, 1};
  raptor_engine_t* e3 = create(devs, 3, 0, RAPTOR_OK, __LINE__);
  raptor_engine_t* e1 = create(NULL, 0, 0, RAPTOR_OK, __LINE__);
  if (!e3 || !e1) return;
  int32_t n = 0;
  EXPECT(RAPTOR_OK, raptor_engine_device_count, (e3, &n));
  CHECK(n == 3);
  raptor_model_t* m3 = load(e3);
  raptor_model_t* m1 = load(e1);

  raptor_device_stats_t ds[3];
  for (int i = 0; i < 3; i++) {
    memset(&ds[i], 0, sizeof ds[i]);
    ds[i].struct_size = sizeof ds[i];
    EXPECT(RAPTOR_OK, raptor_engine_get_device_stats, (e3, i, &ds[i]));
    CHECK(ds[i].index == i && ds[i].ordinal == devs[i] && ds[i].failed == 0);
    CHECK(ds[i].weight_bytes > 0 && ds[i].weight_bytes == ds[0].weight_bytes); /* one copy per device */
    CHECK(ds[i].memory_total_bytes == 0);                                     /* CPU: no device memory */
  }

  /* Requests of varied lengths: async on three devices, sync on one. */
  static int32_t ids[NREQ][128];
  static int32_t cu[NREQ][3];
  static float got[NREQ][2 * HIDDEN], want[NREQ][2 * HIDDEN];
  raptor_request_t* reqs[NREQ];
  done_state done[NREQ];
  uint64_t r = 12345;
  for (int q = 0; q < NREQ; q++) {
    int nseq = 1 + q % 2;
    cu[q][0] = 0;
    for (int s = 0; s < nseq; s++) {
      r = r * 6364136223846793005ull + 1442695040888963407ull;
      cu[q][s + 1] = cu[q][s] + 1 + (int32_t)((r >> 33) % 60);
    }
    for (int i = 0; i < cu[q][nseq]; i++) {
      r = r * 6364136223846793005ull + 1442695040888963407ull;
      ids[q][i] = 5 + (int32_t)((r >> 33) % (VOCAB - 5));
    }
    raptor_batch_t b;
    raptor_batch_default(&b);
    b.token_ids = ids[q];
    b.num_tokens = (size_t)cu[q][nseq];
    b.cu_seqlens = cu[q];
    b.num_seqs = (size_t)nseq;
    raptor_output_t o;
    raptor_output_default(&o);
    o.pooled = want[q];
    o.pooled_bytes = sizeof want[q];
    EXPECT(RAPTOR_OK, raptor_encode, (m1, &b, &o));
    o.pooled = got[q];
    atomic_init(&done[q].calls, 0);
    reqs[q] = NULL;
    EXPECT(RAPTOR_OK, raptor_submit, (m3, &b, &o, done_cb, &done[q], &reqs[q]));
  }
  for (int q = 0; q < NREQ; q++) {
    raptor_status_t st = -1;
    EXPECT(RAPTOR_OK, raptor_request_wait, (reqs[q], 60 * 1000 * 1000, &st));
    CHECK(st == RAPTOR_OK);
  }
  raptor_engine_shutdown(e3, RAPTOR_SHUTDOWN_DRAIN, -1); /* every callback has returned */
  uint64_t total = 0;
  int used = 0;
  for (int q = 0; q < NREQ; q++) {
    CHECK(atomic_load(&done[q].calls) == 1);
    int nseq = 1 + q % 2;
    CHECK(memcmp(got[q], want[q], (size_t)nseq * HIDDEN * sizeof(float)) == 0);
  }
  for (int i = 0; i < 3; i++) {
    EXPECT(RAPTOR_OK, raptor_engine_get_device_stats, (e3, i, &ds[i]));
    total += ds[i].requests;
    used += ds[i].batches > 0;
    printf("device %d (ordinal %d): %llu batches, %llu requests, %llu tokens, weights %lld bytes\n", i,
           ds[i].ordinal, (unsigned long long)ds[i].batches, (unsigned long long)ds[i].requests,
           (unsigned long long)ds[i].tokens, (long long)ds[i].weight_bytes);
  }
  CHECK(total == NREQ);
  CHECK(used >= 2);
  for (int q = 0; q < NREQ; q++) raptor_request_free(reqs[q]);

  /* Prometheus: per-device lines with their labels. */
  size_t len = 0;
  EXPECT(RAPTOR_OK, raptor_engine_metrics_prometheus, (e3, NULL, 0, &len));
  char* text = malloc(len + 1024);
  EXPECT(RAPTOR_OK, raptor_engine_metrics_prometheus, (e3, text, len + 1024, &len));
  CHECK(strstr(text, "raptor_device_weight_bytes{device=\"0\",ordinal=\"2\"}") != NULL);
  CHECK(strstr(text, "raptor_device_failed{device=\"2\",ordinal=\"1\"} 0") != NULL);
  CHECK(strstr(text, "# TYPE raptor_device_batches_total counter") != NULL);
  free(text);

  /* Bad device-stats calls. */
  raptor_device_stats_t s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_engine_get_device_stats, (e3, 3, &s));
  EXPECT(RAPTOR_ERR_OUT_OF_RANGE, raptor_engine_get_device_stats, (e3, -1, &s));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_get_device_stats, (e3, 0, NULL));
  s.struct_size = 8;
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_get_device_stats, (e3, 0, &s));
  s.struct_size = sizeof s;
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_engine_get_device_stats, (NULL, 0, &s));
  EXPECT(RAPTOR_ERR_INVALID_ARGUMENT, raptor_engine_device_count, (e3, NULL));
  EXPECT(RAPTOR_ERR_INVALID_HANDLE, raptor_engine_device_count, ((raptor_engine_t*)(uintptr_t)0x77, &n));

  /* Freeing the model releases its weights on every device. */
  raptor_model_free(m3);
  for (int i = 0; i < 3; i++) {
    EXPECT(RAPTOR_OK, raptor_engine_get_device_stats, (e3, i, &s));
    CHECK(s.weight_bytes == 0);
  }
  raptor_engine_free(e3);
  raptor_engine_free(e1);
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_devices DIR\n");
    return 2;
  }
  snprintf(dir, sizeof dir, "%s", argv[1]);
  raptor_set_log_callback(NULL, RAPTOR_LOG_WARN, NULL);
  test_options();
  test_bad_selections();
  test_three_devices();
  printf("test_devices: %d checks, %d failures\n", atomic_load(&checks), atomic_load(&failures));
  return atomic_load(&failures) ? 1 : 0;
}
