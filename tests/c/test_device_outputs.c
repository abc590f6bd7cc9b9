/* Device-memory outputs through the C ABI (raptor_output_t.memory =
 * RAPTOR_MEMORY_DEVICE).
 *
 * On a CPU engine (always run): raptor_encode and raptor_submit refuse device
 * outputs with RAPTOR_ERR_UNSUPPORTED and a message naming the CUDA backend,
 * leave *out_req alone and call no callback.
 *
 * On a CUDA engine (when RAPTOR_TEST_BACKEND=cuda and MODEL, a model the
 * CUDA backend runs such as all-MiniLM-L6-v2, is given): the library writes
 * fp32 hidden states and pooled vectors into device memory allocated here
 * with the driver API (dlopen libcuda.so.1, the engine's primary context);
 * they match the same call into host memory, sync and async; FP16 device
 * outputs and logits with device memory are UNSUPPORTED. Asked for the
 * CUDA part without a usable GPU it exits 77 (skip) after the CPU part,
 * saying why.
 *
 * Usage: test_device_outputs TESTMODELS_DIR [MODEL] */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raptor.h"

static int failures;

#define CHECK(cond)                                                                     \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, \
              #cond, raptor_last_error());                                              \
      failures++;                                                                       \
    }                                                                                   \
  } while (0)

#define EXPECT(call, status) CHECK((call) == (status))

static raptor_model_t* load(raptor_engine_t* e, const char* path) {
  raptor_model_t* m = NULL;
  if (raptor_model_load(e, path, &m) != RAPTOR_OK) {
    fprintf(stderr, "cannot load %s: %s\n", path, raptor_last_error());
    exit(2);
  }
  return m;
}

typedef struct {
  int32_t ids[96];
  int32_t cu[4];
  raptor_batch_t b;
} batch3;

/* Three sequences of 17, 40 and 9 tokens with ids in [2, vocab). */
static void make_batch(batch3* bt, int64_t vocab) {
  const int lens[3] = {17, 40, 9};
  int t = 0;
  bt->cu[0] = 0;
  for (int s = 0; s < 3; s++) {
    for (int i = 0; i < lens[s]; i++, t++) bt->ids[t] = (int32_t)(2 + (t * 7919 + s * 31) % (vocab - 2));
    bt->cu[s + 1] = t;
  }
  raptor_batch_default(&bt->b);
  bt->b.token_ids = bt->ids;
  bt->b.num_tokens = (size_t)t;
  bt->b.cu_seqlens = bt->cu;
  bt->b.num_seqs = 3;
}

static int64_t hidden_size(raptor_model_t* m, int64_t* vocab) {
  raptor_model_info_t info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  EXPECT(raptor_model_get_info(m, &info), RAPTOR_OK);
  *vocab = info.vocab_size;
  return info.hidden_size;
}

typedef struct {
  int calls;
  raptor_status_t st;
} done_t;

static void on_done(raptor_request_t* r, raptor_status_t st, void* user) {
  (void)r;
  done_t* d = user;
  d->calls++;
  d->st = st;
}

/* ------------------------------------------------------------- CPU engine */
static void cpu_part(const char* dir) {
  raptor_engine_options_t eo;
  raptor_engine_options_default(&eo);
  eo.backend = RAPTOR_BACKEND_CPU;
  raptor_engine_t* e = NULL;
  EXPECT(raptor_engine_create(&eo, &e), RAPTOR_OK);
  char path[4096];
  snprintf(path, sizeof path, "%s/tiny-bert.raptor", dir);
  raptor_model_t* m = load(e, path);
  int64_t vocab = 0, H = hidden_size(m, &vocab);
  batch3 bt;
  make_batch(&bt, vocab);
  float* host = calloc(bt.b.num_tokens * (size_t)H, sizeof(float));
  raptor_output_t o;
  raptor_output_default(&o);
  o.memory = RAPTOR_MEMORY_DEVICE;
  o.hidden = host; /* any pointer: the refusal comes before it is used */
  o.hidden_bytes = bt.b.num_tokens * (size_t)H * sizeof(float);
  EXPECT(raptor_encode(m, &bt.b, &o), RAPTOR_ERR_UNSUPPORTED);
  CHECK(strstr(raptor_last_error(), "RAPTOR_MEMORY_DEVICE") != NULL && strstr(raptor_last_error(), "CUDA") != NULL);
  raptor_request_t* req = (raptor_request_t*)&o;
  done_t d = {0, RAPTOR_OK};
  EXPECT(raptor_submit(m, &bt.b, &o, on_done, &d, &req), RAPTOR_ERR_UNSUPPORTED);
  CHECK(req == (raptor_request_t*)&o && d.calls == 0);
  o.dtype = RAPTOR_DTYPE_FP16;
  EXPECT(raptor_encode(m, &bt.b, &o), RAPTOR_ERR_UNSUPPORTED);
  /* host memory still works */
  o.memory = RAPTOR_MEMORY_HOST;
  o.dtype = RAPTOR_DTYPE_FP32;
  EXPECT(raptor_encode(m, &bt.b, &o), RAPTOR_OK);
  printf("cpu engine: device outputs refused with UNSUPPORTED (%s)\n", "encode, submit, fp16");
  free(host);
  raptor_model_free(m);
  raptor_engine_free(e);
}

/* ----------------------------------------------------- CUDA engine (GPU) */
static struct {
  int (*init)(unsigned);
  int (*device_get)(int*, int);
  int (*retain)(void**, int);
  int (*set_current)(void*);
  int (*alloc)(unsigned long long*, size_t);
  int (*free)(unsigned long long);
  int (*dtoh)(void*, unsigned long long, size_t);
  int (*memset32)(unsigned long long, unsigned, size_t);
} cu;

static int cuda_open(void) {
  void* h = dlopen("libcuda.so.1", RTLD_NOW);
  if (!h) return 0;
  *(void**)&cu.init = dlsym(h, "cuInit");
  *(void**)&cu.device_get = dlsym(h, "cuDeviceGet");
  *(void**)&cu.retain = dlsym(h, "cuDevicePrimaryCtxRetain");
  *(void**)&cu.set_current = dlsym(h, "cuCtxSetCurrent");
  *(void**)&cu.alloc = dlsym(h, "cuMemAlloc_v2");
  *(void**)&cu.free = dlsym(h, "cuMemFree_v2");
  *(void**)&cu.dtoh = dlsym(h, "cuMemcpyDtoH_v2");
  *(void**)&cu.memset32 = dlsym(h, "cuMemsetD32_v2");
  if (!cu.init || !cu.device_get || !cu.retain || !cu.set_current || !cu.alloc || !cu.free || !cu.dtoh ||
      !cu.memset32)
    return 0;
  int dev = 0;
  void* ctx = NULL;
  if (cu.init(0) || cu.device_get(&dev, 0) || cu.retain(&ctx, dev) || cu.set_current(ctx)) return 0;
  return 1;
}

static double rel_err(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double d = (double)a[i] - (double)b[i];
    if (isnan(a[i])) return INFINITY;
    num += d * d;
    den += (double)b[i] * b[i];
  }
  return sqrt(num / (den > 1e-30 ? den : 1e-30));
}

static int cuda_part(const char* model_path) {
  const char* want = getenv("RAPTOR_TEST_BACKEND");
  if (!want || strcmp(want, "cuda") != 0 || !model_path) {
    printf("cuda part not run: set RAPTOR_TEST_BACKEND=cuda and pass a model the CUDA backend runs\n");
    return 0;
  }
  raptor_engine_options_t eo;
  raptor_engine_options_default(&eo);
  eo.backend = RAPTOR_BACKEND_CUDA;
  raptor_engine_t* e = NULL;
  raptor_status_t st = raptor_engine_create(&eo, &e);
  if (st != RAPTOR_OK) {
    printf("SKIP cuda part: no CUDA engine here: %s\n", raptor_last_error());
    return 77;
  }
  CHECK(strcmp(raptor_engine_backend(e), "cuda") == 0);
  if (!cuda_open()) {
    fprintf(stderr, "cannot use libcuda.so.1 from the test\n");
    failures++;
    raptor_engine_free(e);
    return 1;
  }
  raptor_model_t* m = load(e, model_path);
  int64_t vocab = 0, H = hidden_size(m, &vocab);
  batch3 bt;
  make_batch(&bt, vocab);
  size_t T = bt.b.num_tokens, S = bt.b.num_seqs;
  size_t hb = T * (size_t)H * 4, pb = S * (size_t)H * 4;
  float *hh = malloc(hb), *hp = malloc(pb), *dh = malloc(hb), *dp = malloc(pb);

  raptor_output_t o;
  raptor_output_default(&o);
  o.hidden = hh;
  o.hidden_bytes = hb;
  o.pooled = hp;
  o.pooled_bytes = pb;
  o.normalize = 1;
  EXPECT(raptor_encode(m, &bt.b, &o), RAPTOR_OK);

  unsigned long long gh = 0, gp = 0;
  CHECK(cu.alloc(&gh, hb) == 0 && cu.alloc(&gp, pb) == 0);
  raptor_output_t d = o;
  d.memory = RAPTOR_MEMORY_DEVICE;
  d.hidden = (void*)(uintptr_t)gh;
  d.pooled = (void*)(uintptr_t)gp;
  for (int pass = 0; pass < 2; pass++) { /* 0: raptor_encode, 1: raptor_submit */
    CHECK(cu.memset32(gh, 0x7fc00000u, hb / 4) == 0 && cu.memset32(gp, 0x7fc00000u, pb / 4) == 0); /* NaN */
    if (pass == 0) {
      EXPECT(raptor_encode(m, &bt.b, &d), RAPTOR_OK);
    } else {
      raptor_request_t* req = NULL;
      done_t dn = {0, RAPTOR_OK};
      EXPECT(raptor_submit(m, &bt.b, &d, on_done, &dn, &req), RAPTOR_OK);
      raptor_status_t res = RAPTOR_ERR_INTERNAL;
      EXPECT(raptor_request_wait(req, -1, &res), RAPTOR_OK);
      CHECK(res == RAPTOR_OK);
      raptor_request_free(req);
    }
    CHECK(cu.dtoh(dh, gh, hb) == 0 && cu.dtoh(dp, gp, pb) == 0);
    double rh = rel_err(dh, hh, T * (size_t)H), rp = rel_err(dp, hp, S * (size_t)H);
    printf("cuda engine, %s: device vs host outputs: hidden rel %.2e, pooled rel %.2e\n",
           pass ? "raptor_submit" : "raptor_encode", rh, rp);
    CHECK(rh <= 1e-6 && rp <= 1e-6);
  }
  /* FP16 device outputs, logits with device memory, too small sizes */
  raptor_output_t bad = d;
  bad.dtype = RAPTOR_DTYPE_FP16;
  EXPECT(raptor_encode(m, &bt.b, &bad), RAPTOR_ERR_UNSUPPORTED);
  CHECK(strstr(raptor_last_error(), "FP32 only") != NULL);
  bad = d;
  bad.hidden_bytes = hb - 1;
  EXPECT(raptor_encode(m, &bt.b, &bad), RAPTOR_ERR_BUFFER_TOO_SMALL);
  raptor_output_t withLogits;
  raptor_output_init(&withLogits, sizeof withLogits);
  withLogits.memory = RAPTOR_MEMORY_DEVICE;
  withLogits.logits = hp;
  withLogits.logits_bytes = pb;
  CHECK(raptor_encode(m, &bt.b, &withLogits) == RAPTOR_ERR_UNSUPPORTED);
  cu.free(gh);
  cu.free(gp);
  free(hh);
  free(hp);
  free(dh);
  free(dp);
  raptor_model_free(m);
  raptor_engine_free(e);
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s TESTMODELS_DIR [MODEL]\n", argv[0]);
    return 2;
  }
  cpu_part(argv[1]);
  int rc = cuda_part(argc > 2 ? argv[2] : NULL);
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  if (rc == 77) return 77;
  printf("test_device_outputs: all checks passed\n");
  return 0;
}
