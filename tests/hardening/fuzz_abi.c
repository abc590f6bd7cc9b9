/*
 * fuzz_abi: the C ABI against randomized invalid arguments, from a seeded
 * PRNG (no libFuzzer: it runs under plain gcc, ASan and UBSan alike).
 *
 * Usage: fuzz_abi MODEL_DIR [ITERATIONS [SEED]]   (defaults 20000, 1)
 *
 * Every iteration builds a valid call of one exported function, then applies
 * 0 to 3 faults drawn from the header's list (NULL, freed, foreign, wrong-kind
 * and misaligned handles; NULL structs and buffers; wrong struct_size; zero,
 * oversized and mismatched counts; unsorted, empty and negative cu_seqlens;
 * ids and types out of range; sequences too long; short output buffers; bad
 * enums; misaligned but valid buffers). With one fault the call must return
 * exactly the status the header documents for it; with several, one of
 * theirs; with none, RAPTOR_OK. Every failure must leave a non-empty
 * raptor_last_error() and its out parameters untouched. raptor_submit may
 * refuse at once or accept and complete the request with the status.
 * Afterwards all handles must be released (process_handles back at the
 * baseline) and the goroutine count must come back.
 *
 * A failing check prints the seed and iteration: rerun with that seed.
 */
#include <raptor.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures, checks;
static uint64_t seed;
static long iter;

#define CHECK(cond)                                                                            \
  do {                                                                                         \
    checks++;                                                                                  \
    if (!(cond)) {                                                                             \
      failures++;                                                                              \
      if (failures <= 30)                                                                      \
        fprintf(stderr, "FAIL %s:%d (seed %llu, iteration %ld): %s\n", __FILE__, __LINE__,     \
                (unsigned long long)seed, iter, #cond);                                        \
    }                                                                                          \
  } while (0)

static uint64_t rng;
static uint64_t next64(void) { /* splitmix64 */
  uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static uint32_t rnd(uint32_t n) { return (uint32_t)(next64() % n); }

enum { MAX_FAULTS = 3 };

/* The statuses the faults of one call allow. */
enum { MAX_WANT = MAX_FAULTS + 4 }; /* + out_req NULL, a logits fault, an options fault */
typedef struct {
  int n;
  raptor_status_t want[MAX_WANT];
  const char* what[MAX_WANT];
} faults_t;

static void add_fault(faults_t* f, raptor_status_t st, const char* what) {
  if (f->n < MAX_WANT) {
    f->want[f->n] = st;
    f->what[f->n] = what;
    f->n++;
  }
}

/* check_status: no fault -> OK; faults -> one of theirs, with a message. */
static int check_status(const char* fn, raptor_status_t got, const faults_t* f) {
  int ok = 0;
  if (f->n == 0) {
    ok = got == RAPTOR_OK;
  } else {
    for (int i = 0; i < f->n; i++) ok |= got == f->want[i];
  }
  checks++;
  if (!ok) {
    failures++;
    if (failures <= 30) {
      fprintf(stderr, "FAIL %s (seed %llu, iteration %ld): got %s (%s), faults:", fn, (unsigned long long)seed, iter,
              raptor_status_name(got), got ? raptor_last_error() : "");
      for (int i = 0; i < f->n; i++) fprintf(stderr, " [%s -> %s]", f->what[i], raptor_status_name(f->want[i]));
      fprintf(stderr, "%s\n", f->n ? "" : " none");
    }
  }
  if (got != RAPTOR_OK) CHECK(raptor_last_error() != NULL && strlen(raptor_last_error()) > 0);
  return ok;
}

/* ------------------------------------------------------------------ fixtures */

static raptor_engine_t *eng, *eng2, *freed_engine;
static raptor_model_t *model, *model2, *freed_model;
static raptor_model_t* model_cls; /* tiny-bert-cls: tiny-bert's shape, a 3-label sequence-classification head */
static const char* cls_labels[3] = {"negative", "neutral", "positive"};
static int32_t backend = RAPTOR_BACKEND_CPU; /* RAPTOR_TEST_BACKEND=cuda: the engines under test run on the GPU */
static int on_gpu;
static raptor_request_t* freed_request;
static raptor_model_info_t info;
static unsigned char* image;
static size_t image_size;
static int foreign_word[4];

/* A bad handle of any kind, for a call that wants one of kind `want`
 * (0 engine, 1 model, 2 request). */
static void* bad_handle(int want, const char** what) {
  switch (rnd(7)) {
    case 0: *what = "NULL handle"; return NULL;
    case 1: *what = "foreign pointer"; return (void*)foreign_word;
    case 2: *what = "misaligned foreign pointer"; return (void*)((char*)foreign_word + 1);
    case 3: *what = "random handle"; return (void*)(uintptr_t)next64();
    case 4: *what = "all-ones handle"; return (void*)(uintptr_t)-1;
    case 5:
      *what = "freed handle";
      return want == 0 ? (void*)freed_engine : want == 1 ? (void*)freed_model : (void*)freed_request;
    default:
      *what = "handle of another kind";
      return want == 1 ? (void*)eng : (void*)model;
  }
}

/* A buffer of n bytes at a random alignment offset (0..7), for pointers the
 * header allows at any alignment. base is what to free. */
static void* any_align(size_t n, void** base) {
  size_t off = rnd(2) ? 0 : 1 + rnd(7);
  unsigned char* p = malloc(n + 8);
  *base = p;
  return p + off;
}

/* ------------------------------------------------------------------ encode and submit */

typedef struct {
  raptor_batch_t b;
  raptor_output_t o;
  void *ids_base, *cu_base, *types_base, *seeds_base, *hid_base, *pool_base;
  int32_t *ids, *cu, *types;
  size_t T, S, cap_tokens, cap_seqs;
  size_t hid_bytes, pool_bytes;
} call_t;

static void call_free(call_t* c) {
  free(c->ids_base);
  free(c->cu_base);
  free(c->types_base);
  free(c->seeds_base);
  free(c->hid_base);
  free(c->pool_base);
}

/* A valid batch for the bert model and valid outputs. Arrays have room for
 * two extra tokens and sequences, so count faults never read past them. */
static void make_valid(call_t* c) {
  memset(c, 0, sizeof *c);
  size_t S = 1 + rnd(6), T = 0;
  size_t lens[8];
  for (size_t s = 0; s < S; s++) {
    lens[s] = rnd(8) == 0 ? (size_t)info.max_sequence_length - rnd(3) : 1 + rnd(40);
    T += lens[s];
  }
  c->T = T;
  c->S = S;
  c->cap_tokens = T + 2;
  c->cap_seqs = S + 3;
  int32_t* ids = any_align(c->cap_tokens * 4, &c->ids_base);
  int32_t* cu = any_align(c->cap_seqs * 4, &c->cu_base);
  int32_t tmp;
  for (size_t i = 0; i < c->cap_tokens; i++) {
    tmp = (int32_t)rnd((uint32_t)info.vocab_size);
    memcpy(ids + i, &tmp, 4);
  }
  tmp = 0;
  memcpy(cu, &tmp, 4);
  for (size_t s = 0; s < S; s++) {
    int32_t prev;
    memcpy(&prev, cu + s, 4);
    tmp = prev + (int32_t)lens[s];
    memcpy(cu + s + 1, &tmp, 4);
  }
  c->ids = ids;
  c->cu = cu;
  raptor_batch_default(&c->b);
  c->b.token_ids = ids;
  c->b.num_tokens = T;
  c->b.cu_seqlens = cu;
  c->b.num_seqs = S;
  if (rnd(2)) {
    int32_t* ty = any_align(c->cap_tokens * 4, &c->types_base);
    for (size_t i = 0; i < c->cap_tokens; i++) {
      tmp = (int32_t)rnd((uint32_t)info.type_vocab_size);
      memcpy(ty + i, &tmp, 4);
    }
    c->types = ty;
    c->b.token_type_ids = ty;
  }
  if (rnd(2)) {
    uint64_t* sd = any_align(c->cap_seqs * 8, &c->seeds_base);
    for (size_t i = 0; i < c->cap_seqs; i++) {
      uint64_t v = next64();
      memcpy(sd + i, &v, 8);
    }
    c->b.seeds = sd;
  }
  raptor_output_default(&c->o);
  c->o.dtype = rnd(2) ? RAPTOR_DTYPE_FP32 : RAPTOR_DTYPE_FP16;
  c->o.pooling = rnd(2) ? RAPTOR_POOLING_CLS : RAPTOR_POOLING_MEAN;
  c->o.normalize = (int32_t)rnd(2);
  size_t elem = c->o.dtype == RAPTOR_DTYPE_FP16 ? 2 : 4;
  int which = (int)rnd(4); /* 0 none, 1 hidden, 2 pooled, 3 both */
  if (which & 1) {
    c->hid_bytes = T * (size_t)info.hidden_size * elem;
    c->o.hidden = any_align(c->hid_bytes, &c->hid_base);
    c->o.hidden_bytes = c->hid_bytes + (rnd(4) == 0 ? rnd(16) : 0);
    if (c->o.hidden_bytes > c->hid_bytes) { /* claim only what exists */
      c->o.hidden_bytes = c->hid_bytes;
    }
  }
  if (which & 2) {
    c->pool_bytes = S * (size_t)info.hidden_size * elem;
    c->o.pooled = any_align(c->pool_bytes, &c->pool_base);
    c->o.pooled_bytes = c->pool_bytes;
  }
}

static void set_i32(int32_t* p, size_t i, int32_t v) { memcpy(p + i, &v, 4); }
static int32_t get_i32(const int32_t* p, size_t i) {
  int32_t v;
  memcpy(&v, p + i, 4);
  return v;
}

/* One fault on a valid call; returns its status. Faults on the handle are
 * applied by the caller (*mh). */
static void apply_fault(call_t* c, faults_t* f, raptor_model_t** mh, int* null_batch, int* null_out, int batch_only) {
  const char* what;
  size_t H = (size_t)info.hidden_size;
  int k;
  do k = (int)rnd(24); /* batch_only: faults of the handle and the batch (raptor_model_logits_shape) */
  while (batch_only && (k == 2 || k == 4 || (k >= 17 && k <= 23)));
  switch (k) {
    case 0: *mh = bad_handle(1, &what); add_fault(f, RAPTOR_ERR_INVALID_HANDLE, what); break;
    case 1: *null_batch = 1; add_fault(f, RAPTOR_ERR_INVALID_ARGUMENT, "batch NULL"); break;
    case 2: *null_out = 1; add_fault(f, RAPTOR_ERR_INVALID_ARGUMENT, "output NULL"); break;
    case 3: {
      size_t bad[] = {0, 4, sizeof(raptor_batch_t) - 8, sizeof(raptor_batch_t) + 8, (size_t)next64()};
      c->b.struct_size = bad[rnd(5)];
      add_fault(f, RAPTOR_ERR_INVALID_ARGUMENT, "batch.struct_size");
      break;
    }
    case 4: {
      size_t bad[] = {0, 4, sizeof(raptor_output_t) - 8, sizeof(raptor_output_t) + 8, (size_t)next64()};
      c->o.struct_size = bad[rnd(5)];
      add_fault(f, RAPTOR_ERR_INVALID_ARGUMENT, "output.struct_size");
      break;
    }
    case 5: c->b.num_tokens = 0; add_fault(f, RAPTOR_ERR_INVALID_ARGUMENT, "num_tokens 0"); break;
    case 6: {
      size_t bad[] = {SIZE_MAX, SIZE_MAX / 2, (size_t)1 << 40, ((size_t)1 << 26) + 1};
      c->b.num_tokens = bad[rnd(4)];
      add_fault(f, RAPTOR_ERR_OUT_OF_RANGE, "num_tokens oversized");
      break;
    }
    case 7: c->b.num_seqs = 0; add_fault(f, RAPTOR_ERR_INVALID_ARGUMENT, "num_seqs 0"); break;
    case 8: /* more sequences than tokens (the array has room: T small) */
      if (c->T + 1 < c->cap_seqs) {
        c->b.num_seqs = c->T + 1;
        add_fault(f, RAPTOR_ERR_INVALID_ARGUMENT, "num_seqs > num_tokens");
      } else {
        c->b.num_seqs = SIZE_MAX;
        add_fault(f, RAPTOR_ERR_INVALID_ARGUMENT, "num_seqs SIZE_MAX");
      }
      break;
    case 9: c->b.token_ids = NULL; add_fault(f, RAPTOR_ERR_INVALID_ARGUMENT, "token_ids NULL"); break;
    case 10: c->b.cu_seqlens = NULL; add_fault(f, RAPTOR_ERR_INVALID_ARGUMENT, "cu_seqlens NULL"); break;
    case 11: set_i32(c->cu, 0, rnd(2) ? 1 : -1); add_fault(f, RAPTOR_ERR_INVALID_ARGUMENT, "cu_seqlens[0] != 0"); break;
    case 12: /* the last offset disagrees with num_tokens (one fewer: the output buffers stay large enough) */
      if (c->T >= 2) {
        c->b.num_tokens = c->T - 1;
      } else {
        c->b.num_tokens = c->T + 1;
        c->o.hidden = NULL;
      }
      add_fault(f, RAPTOR_ERR_INVALID_ARGUMENT, "cu_seqlens[S] != num_tokens");
      break;
    case 13: /* unsorted or empty: an interior offset moved behind its predecessor */
      if (c->S >= 2) {
        size_t s = 1 + rnd((uint32_t)c->S - 1);
        set_i32(c->cu, s, get_i32(c->cu, s - 1) - (int32_t)rnd(3));
        add_fault(f, RAPTOR_ERR_INVALID_ARGUMENT, "cu_seqlens not increasing");
      } else {
        set_i32(c->cu, 1, -5);
        add_fault(f, RAPTOR_ERR_INVALID_ARGUMENT, "negative cu_seqlens");
      }
      break;
    case 14: { /* a sequence one token longer than allowed: rebuild as one sequence */
      size_t n = (size_t)info.max_sequence_length + 1;
      if (n > c->cap_tokens) {
        free(c->ids_base);
        int32_t* ids = any_align(n * 4, &c->ids_base);
        for (size_t i = 0; i < n; i++) set_i32(ids, i, 1);
        c->ids = ids;
        c->b.token_ids = ids;
        c->cap_tokens = n;
      }
      c->b.token_type_ids = NULL;
      c->types = NULL;
      c->b.seeds = NULL;
      c->b.num_tokens = n;
      c->b.num_seqs = 1;
      set_i32(c->cu, 0, 0);
      set_i32(c->cu, 1, (int32_t)n);
      c->T = n;
      c->S = 1;
      c->o.hidden = NULL; /* the output sizes would not match any more */
      c->o.pooled = NULL;
      add_fault(f, RAPTOR_ERR_OUT_OF_RANGE, "sequence too long");
      break;
    }
    case 15: {
      int32_t bad[] = {-1, INT32_MIN, info.vocab_size, INT32_MAX};
      set_i32(c->ids, rnd((uint32_t)c->T), bad[rnd(4)]);
      add_fault(f, RAPTOR_ERR_OUT_OF_RANGE, "token id out of range");
      break;
    }
    case 16:
      if (c->types) {
        int32_t bad[] = {-1, info.type_vocab_size, INT32_MAX};
        set_i32(c->types, rnd((uint32_t)c->T), bad[rnd(3)]);
        add_fault(f, RAPTOR_ERR_OUT_OF_RANGE, "token type out of range");
      }
      break;
    case 17:
      if (c->o.hidden) {
        c->o.hidden_bytes = c->hid_bytes - 1 - rnd((uint32_t)c->hid_bytes);
        add_fault(f, RAPTOR_ERR_BUFFER_TOO_SMALL, "hidden_bytes short");
      }
      break;
    case 18:
      if (c->o.pooled) {
        c->o.pooled_bytes = c->pool_bytes - 1 - rnd((uint32_t)c->pool_bytes);
        add_fault(f, RAPTOR_ERR_BUFFER_TOO_SMALL, "pooled_bytes short");
      }
      break;
    case 19:
      c->o.memory = RAPTOR_MEMORY_DEVICE;
      if (on_gpu) { /* host pointers must never reach the GPU: FP16 makes DEVICE unsupported there */
        c->o.dtype = RAPTOR_DTYPE_FP16;
        add_fault(f, RAPTOR_ERR_UNSUPPORTED, "memory DEVICE with FP16");
      } else {
        add_fault(f, RAPTOR_ERR_UNSUPPORTED, "memory DEVICE on the CPU");
      }
      break;
    case 20: c->o.memory = rnd(2) ? -1 : 2 + (int32_t)rnd(100); add_fault(f, RAPTOR_ERR_INVALID_ARGUMENT, "memory unknown"); break;
    case 21:
      if (rnd(2)) {
        c->o.dtype = RAPTOR_DTYPE_BF16;
        add_fault(f, RAPTOR_ERR_UNSUPPORTED, "dtype BF16");
      } else {
        c->o.dtype = rnd(2) ? -1 : 3 + (int32_t)rnd(100);
        add_fault(f, RAPTOR_ERR_INVALID_ARGUMENT, "dtype unknown");
      }
      break;
    case 22: c->o.pooling = rnd(2) ? -1 : 3 + (int32_t)rnd(100); /* 2 is RAPTOR_POOLING_POOLER */ add_fault(f, RAPTOR_ERR_INVALID_ARGUMENT, "pooling unknown"); break;
    default: /* misaligned but valid pointers: the header allows any alignment; not a fault */
      (void)H;
      break;
  }
}

static int finite_output(const call_t* c) {
  if (c->o.dtype != RAPTOR_DTYPE_FP32) return 1;
  const unsigned char* bufs[2] = {c->o.hidden, c->o.pooled};
  size_t sizes[2] = {c->hid_bytes, c->pool_bytes};
  for (int k = 0; k < 2; k++) {
    if (!bufs[k]) continue;
    for (size_t i = 0; i + 4 <= sizes[k]; i += 4) {
      float v;
      memcpy(&v, bufs[k] + i, 4);
      if (!isfinite(v)) return 0;
    }
  }
  return 1;
}

/* Logits of a request equal those of raptor_encode of the same batch: bit for
 * bit on the CPU, within rounding on the GPU. */
static int same_logits(const float* a, const float* b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float x, y;
    memcpy(&x, a + i, 4);
    memcpy(&y, b + i, 4);
    if (!isfinite(x)) return 0;
    if (on_gpu ? fabsf(x - y) > 2e-2f * (1.0f + fabsf(y)) : memcmp(&x, &y, 4) != 0) return 0;
  }
  return 1;
}

/* submit: 0 raptor_encode, 1 raptor_submit, 2 raptor_submit_with_options.
 * A third of the calls go to the head model with a current-size output and,
 * mostly, logits (faults: short logits_bytes, a model without a head; a
 * v1-size output with logits set is no fault: the logits are never read). */
static void fuzz_encode(int submit) {
  call_t c;
  make_valid(&c);
  faults_t f = {0};
  raptor_model_t* mh = model;
  int null_batch = 0, null_out = 0, null_req = 0;
  int nf = rnd(4) == 0 ? 0 : 1 + (rnd(3) == 0 ? rnd(MAX_FAULTS) : 0);

  unsigned char* lg = NULL;
  void* lg_base = NULL;
  size_t lg_bytes = 0;
  int v1_logits = 0;
  if (rnd(3) == 0) {
    mh = model_cls;
    c.o.struct_size = sizeof c.o; /* make_valid zeroed the appended fields */
    if (rnd(4)) {
      int64_t rows = -1, cols = -1;
      CHECK(raptor_model_logits_shape(model_cls, &c.b, &rows, &cols) == RAPTOR_OK);
      CHECK(rows == (int64_t)c.S && cols == 3);
      lg_bytes = c.S * 3 * 4;
      lg = any_align(lg_bytes + 16, &lg_base);
      memset(lg, 0xa5, lg_bytes + 16);
      c.o.logits = lg;
      c.o.logits_bytes = lg_bytes;
      switch (rnd(8)) {
        case 0: c.o.logits_bytes = lg_bytes - 1 - rnd((uint32_t)lg_bytes); add_fault(&f, RAPTOR_ERR_BUFFER_TOO_SMALL, "logits_bytes short"); break;
        case 1: mh = model; add_fault(&f, RAPTOR_ERR_UNSUPPORTED, "logits of a model without a head"); break;
        case 2: if (nf == 0) { c.o.struct_size = RAPTOR_OUTPUT_V1_SIZE; v1_logits = 1; } break;
        default: break;
      }
    }
  }
  for (int i = 0; i < nf; i++) apply_fault(&c, &f, &mh, &null_batch, &null_out, 0);
  if (submit && rnd(30) == 0) {
    null_req = 1;
    add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "out_req NULL");
  }
  raptor_submit_options_t so, *sop = NULL;
  if (submit == 2) {
    memset(&so, 0x44, sizeof so);
    raptor_submit_options_default(&so);
    CHECK(so.struct_size == sizeof so && so.priority == 0 && so.deadline_us == 0 && so.block_timeout_us == 0);
    so.priority = (int32_t)next64();
    const int64_t day100 = 100LL * 24 * 3600 * 1000000;
    switch (rnd(4)) { /* deadlines far enough never to expire here */
      case 0: so.deadline_us = 0; break;
      case 1: so.deadline_us = day100; break;
      default: so.deadline_us = 60 * 1000000LL + (int64_t)rnd(1000000000); break;
    }
    int64_t bt[] = {0, -1, INT64_MIN, 1000, day100};
    so.block_timeout_us = bt[rnd(5)];
    sop = rnd(8) == 0 ? NULL : &so;
    if (sop && rnd(3) == 0) {
      switch (rnd(4)) {
        case 0: {
          size_t bad[] = {0, 4, sizeof so - 8, sizeof so + 8, (size_t)next64()};
          so.struct_size = bad[rnd(5)];
          add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "options.struct_size");
          break;
        }
        case 1: so.deadline_us = rnd(2) ? -1 : INT64_MIN + (int64_t)rnd(10); add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "deadline_us negative"); break;
        case 2: so.deadline_us = rnd(2) ? day100 + 1 : INT64_MAX; add_fault(&f, RAPTOR_ERR_OUT_OF_RANGE, "deadline_us beyond 100 days"); break;
        default: so.block_timeout_us = rnd(2) ? day100 + 1 : INT64_MAX; add_fault(&f, RAPTOR_ERR_OUT_OF_RANGE, "block_timeout_us beyond 100 days"); break;
      }
    }
  }
  const raptor_batch_t* bp = null_batch ? NULL : &c.b;
  const raptor_output_t* op = null_out ? NULL : &c.o;
  raptor_status_t final = -1;
  if (!submit) {
    raptor_status_t st = raptor_encode(mh, bp, op);
    if (check_status("raptor_encode", st, &f)) final = st;
  } else {
    raptor_request_t* sentinel = (raptor_request_t*)(uintptr_t)0x5151;
    raptor_request_t* req = sentinel;
    raptor_status_t st = submit == 2 ? raptor_submit_with_options(mh, bp, op, sop, NULL, NULL, null_req ? NULL : &req)
                                     : raptor_submit(mh, bp, op, NULL, NULL, null_req ? NULL : &req);
    const char* fn = submit == 2 ? "raptor_submit_with_options" : "raptor_submit";
    if (st != RAPTOR_OK) {
      check_status(fn, st, &f);
      CHECK(req == sentinel);
    } else {
      raptor_status_t res = -1;
      CHECK(req != sentinel);
      int cancel = rnd(8) == 0;
      if (cancel) CHECK(raptor_request_cancel(req) == RAPTOR_OK);
      CHECK(raptor_request_wait(req, -1, &res) == RAPTOR_OK);
      if (cancel && res == RAPTOR_ERR_CANCELLED) {
        /* cancelled before it ran: fine whatever the batch */
      } else {
        if (check_status(submit == 2 ? "raptor_submit_with_options (result)" : "raptor_submit (result)", res, &f))
          final = res;
        if (res != RAPTOR_OK) CHECK(strlen(raptor_request_error(req)) > 0);
      }
      raptor_request_free(req);
    }
  }
  if (final == RAPTOR_OK) {
    CHECK(finite_output(&c));
    if (lg) {
      for (size_t i = 0; i < 16; i++) CHECK(lg[lg_bytes + i] == 0xa5); /* nothing past logits_bytes */
      if (v1_logits) {
        for (size_t i = 0; i < lg_bytes; i++) CHECK(lg[i] == 0xa5); /* a v1 output's logits are never read */
      } else {
        float* ref = malloc(lg_bytes);
        raptor_output_t ro;
        raptor_output_init(&ro, sizeof ro);
        ro.logits = ref;
        ro.logits_bytes = lg_bytes;
        CHECK(raptor_encode(model_cls, &c.b, &ro) == RAPTOR_OK);
        CHECK(same_logits((const float*)lg, ref, lg_bytes / 4));
        free(ref);
      }
    }
  }
  free(lg_base);
  call_free(&c);
}

/* raptor_model_logits_shape, raptor_model_label, raptor_output_init. */
static void fuzz_heads(void) {
  faults_t f = {0};
  const char* what;
  switch (rnd(3)) {
    case 0: { /* logits shape: the batch faults of raptor_encode, NULL outs, a model without a head */
      call_t c;
      make_valid(&c);
      raptor_model_t* mh = model_cls;
      int null_batch = 0, null_out = 0;
      int nf = rnd(4) == 0 ? 0 : 1 + (rnd(3) == 0 ? rnd(MAX_FAULTS) : 0);
      for (int i = 0; i < nf; i++) apply_fault(&c, &f, &mh, &null_batch, &null_out, 1);
      int64_t rows = 0x5151, cols = 0x5252, *rp = &rows, *cp = &cols;
      switch (rnd(8)) {
        case 0: rp = NULL; add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "rows NULL"); break;
        case 1: cp = NULL; add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "cols NULL"); break;
        case 2: if (mh == model_cls) { mh = model; add_fault(&f, RAPTOR_ERR_UNSUPPORTED, "model without a head"); } break;
        default: break;
      }
      raptor_status_t st = raptor_model_logits_shape(mh, null_batch ? NULL : &c.b, rp, cp);
      check_status("raptor_model_logits_shape", st, &f);
      if (st == RAPTOR_OK) {
        CHECK(rows == (int64_t)c.S && cols == 3);
      } else {
        CHECK(rows == 0x5151 && cols == 0x5252);
      }
      call_free(&c);
      break;
    }
    case 1: { /* labels */
      raptor_model_t* mh = model_cls;
      int32_t id = (int32_t)rnd(3);
      char buf[64];
      memset(buf, 'x', sizeof buf);
      char* bp = buf;
      size_t cap = rnd(2) ? sizeof buf : strlen(cls_labels[id]) + 1;
      size_t n = 77777, *np = &n;
      int query = 0;
      switch (rnd(10)) {
        case 0: mh = bad_handle(1, &what); add_fault(&f, RAPTOR_ERR_INVALID_HANDLE, what); break;
        case 1: mh = rnd(2) ? model : model2; add_fault(&f, RAPTOR_ERR_UNSUPPORTED, "model without a head"); break;
        case 2: {
          int32_t bad[] = {-1, 3, INT32_MIN, INT32_MAX};
          id = bad[rnd(4)];
          add_fault(&f, RAPTOR_ERR_OUT_OF_RANGE, "label id out of range");
          break;
        }
        case 3: np = NULL; add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "len NULL"); break;
        case 4: bp = NULL; cap = 1 + rnd(64); add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "buf NULL with a cap"); break;
        case 5: cap = rnd((uint32_t)strlen(cls_labels[id]) + 1); add_fault(&f, RAPTOR_ERR_BUFFER_TOO_SMALL, "cap short"); break;
        case 6: bp = NULL; cap = 0; query = 1; break; /* size query */
        default: break;
      }
      raptor_status_t st = raptor_model_label(mh, id, bp, cap, np);
      check_status("raptor_model_label", st, &f);
      if (st == RAPTOR_OK) {
        CHECK(n == strlen(cls_labels[id]));
        if (!query) CHECK(strcmp(buf, cls_labels[id]) == 0);
        for (size_t i = query ? 0 : n + 1; i < sizeof buf; i++) CHECK(buf[i] == 'x');
      } else {
        CHECK(n == 77777);
        for (size_t i = 0; i < sizeof buf; i++) CHECK(buf[i] == 'x');
      }
      break;
    }
    default: { /* raptor_output_init: v1 and current sizes fill; any other size leaves *out untouched */
      raptor_output_t o, ref;
      memset(&o, 0x33, sizeof o);
      memcpy(&ref, &o, sizeof o);
      size_t sizes[] = {RAPTOR_OUTPUT_V1_SIZE, sizeof o, 0, 8, RAPTOR_OUTPUT_V1_SIZE + 8, sizeof o + 8, sizeof o - 8, (size_t)next64()};
      size_t sz = sizes[rnd(8)];
      if (rnd(16) == 0) {
        raptor_output_init(NULL, sz); /* ignored */
        break;
      }
      raptor_output_init(&o, sz);
      if (sz == RAPTOR_OUTPUT_V1_SIZE || sz == sizeof o) {
        CHECK(o.struct_size == sz && o.memory == RAPTOR_MEMORY_HOST && o.dtype == RAPTOR_DTYPE_FP32 && o.hidden == NULL &&
              o.hidden_bytes == 0 && o.pooled == NULL && o.pooled_bytes == 0 && o.pooling == RAPTOR_POOLING_MEAN &&
              o.normalize == 0);
        if (sz == sizeof o) {
          CHECK(o.logits == NULL && o.logits_bytes == 0);
        } else {
          CHECK(memcmp((char*)&o + RAPTOR_OUTPUT_V1_SIZE, (char*)&ref + RAPTOR_OUTPUT_V1_SIZE,
                       sizeof o - RAPTOR_OUTPUT_V1_SIZE) == 0);
        }
      } else {
        CHECK(memcmp(&o, &ref, sizeof o) == 0);
      }
      break;
    }
  }
}

/* raptor_engine_metrics_prometheus and raptor_engine_shutdown's bad inputs on
 * the live engines (which must keep serving), and now and then a whole
 * shutdown of a fresh engine with requests in flight. */
static int shutdown_cb_calls;
static void count_cb(raptor_request_t* req, raptor_status_t status, void* user) {
  (void)req, (void)status, (void)user;
  __atomic_add_fetch(&shutdown_cb_calls, 1, __ATOMIC_SEQ_CST);
}
static long shutdown_cycles;

static void fuzz_shutdown_cycle(void) {
  raptor_engine_options_t eo;
  raptor_engine_options_default(&eo);
  eo.backend = backend;
  eo.worker_threads = 1;
  if (rnd(2)) eo.max_queue_delay_us = 2000;
  raptor_engine_t* e = NULL;
  CHECK(raptor_engine_create(&eo, &e) == RAPTOR_OK);
  if (!e) return;
  raptor_model_t* m = NULL;
  CHECK(raptor_model_load_from_memory(e, image, image_size, &m) == RAPTOR_OK);
  enum { NREQ = 6 };
  call_t c[NREQ];
  raptor_request_t* reqs[NREQ] = {0};
  int nreq = (int)rnd(NREQ + 1);
  __atomic_store_n(&shutdown_cb_calls, 0, __ATOMIC_SEQ_CST);
  int with_cb = 0;
  for (int i = 0; i < nreq; i++) {
    make_valid(&c[i]);
    int cb = (int)rnd(2);
    with_cb += cb;
    CHECK(raptor_submit(m, &c[i].b, &c[i].o, cb ? count_cb : NULL, NULL, &reqs[i]) == RAPTOR_OK);
  }
  int32_t mode = (int32_t)rnd(2);
  int64_t tos[] = {-1, 0, 1000, INT64_MAX, INT64_MIN};
  int64_t to = tos[rnd(5)];
  raptor_status_t st = raptor_engine_shutdown(e, mode, to);
  int unbounded = to < 0 || to == INT64_MAX;
  if (mode == RAPTOR_SHUTDOWN_DRAIN && !unbounded) {
    CHECK(st == RAPTOR_OK || st == RAPTOR_ERR_TIMEOUT);
  } else {
    CHECK(st == RAPTOR_OK);
  }
  /* every request has completed, and its callback has returned */
  CHECK(__atomic_load_n(&shutdown_cb_calls, __ATOMIC_SEQ_CST) == with_cb);
  for (int i = 0; i < nreq; i++) {
    int32_t done = 0;
    raptor_status_t res = -1;
    CHECK(raptor_request_poll(reqs[i], &done, &res) == RAPTOR_OK && done == 1);
    if (mode == RAPTOR_SHUTDOWN_DRAIN && unbounded) {
      CHECK(res == RAPTOR_OK);
    } else {
      CHECK(res == RAPTOR_OK || res == RAPTOR_ERR_SHUTDOWN);
    }
  }
  /* then: every new piece of work is refused with SHUTDOWN, out parameters untouched */
  call_t v;
  make_valid(&v);
  raptor_request_t* rs = (raptor_request_t*)(uintptr_t)0x5151;
  raptor_model_t* ms = (raptor_model_t*)(uintptr_t)0x7171;
  raptor_submit_options_t so;
  raptor_submit_options_default(&so);
  CHECK(raptor_encode(m, &v.b, &v.o) == RAPTOR_ERR_SHUTDOWN);
  CHECK(raptor_submit(m, &v.b, &v.o, NULL, NULL, &rs) == RAPTOR_ERR_SHUTDOWN && rs == (raptor_request_t*)(uintptr_t)0x5151);
  CHECK(raptor_submit_with_options(m, &v.b, &v.o, rnd(2) ? &so : NULL, NULL, NULL, &rs) == RAPTOR_ERR_SHUTDOWN &&
        rs == (raptor_request_t*)(uintptr_t)0x5151);
  CHECK(raptor_model_load_from_memory(e, image, image_size, &ms) == RAPTOR_ERR_SHUTDOWN && ms == (raptor_model_t*)(uintptr_t)0x7171);
  CHECK(strlen(raptor_last_error()) > 0);
  call_free(&v);
  /* the handle stays valid for stats, metrics, a second shutdown (OK) and a bad mode */
  raptor_engine_stats_t s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  CHECK(raptor_engine_get_stats(e, &s) == RAPTOR_OK && s.queue_depth == 0);
  size_t n = 0;
  CHECK(raptor_engine_metrics_prometheus(e, NULL, 0, &n) == RAPTOR_OK && n > 0);
  CHECK(raptor_engine_shutdown(e, (int32_t)rnd(2), (int64_t)rnd(3) - 1) == RAPTOR_OK);
  CHECK(raptor_engine_shutdown(e, 2 + (int32_t)rnd(100), 0) == RAPTOR_ERR_INVALID_ARGUMENT);
  for (int i = 0; i < nreq; i++) {
    raptor_request_free(reqs[i]);
    call_free(&c[i]);
  }
  if (rnd(2)) raptor_model_free(m); /* else the engine frees it */
  raptor_engine_free(e);
  CHECK(raptor_engine_shutdown(e, RAPTOR_SHUTDOWN_DRAIN, 0) == RAPTOR_ERR_INVALID_HANDLE); /* freed */
  shutdown_cycles++;
}

static void fuzz_sched(void) {
  faults_t f = {0};
  const char* what;
  int k = (int)rnd(16);
  if (k < 8) { /* metrics */
    raptor_engine_t* eh = rnd(2) ? eng : eng2;
    size_t need = 0;
    CHECK(raptor_engine_metrics_prometheus(eh, NULL, 0, &need) == RAPTOR_OK && need > 100);
    size_t bufsize = need + 4096;
    char* base;
    char* buf = any_align(bufsize, (void**)&base);
    memset(buf, 'x', bufsize);
    char* bp = buf;
    size_t cap = bufsize, n = 77777, *np = &n;
    int query = 0;
    switch (rnd(8)) {
      case 0: eh = bad_handle(0, &what); add_fault(&f, RAPTOR_ERR_INVALID_HANDLE, what); break;
      case 1: np = NULL; add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "len NULL"); break;
      case 2: bp = NULL; cap = 1 + rnd(1 << 20); add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "buf NULL with a cap"); break;
      case 3: cap = rnd((uint32_t)need / 2); add_fault(&f, RAPTOR_ERR_BUFFER_TOO_SMALL, "cap short"); break;
      case 4: bp = NULL; cap = 0; query = 1; break;
      default: break;
    }
    raptor_status_t st = raptor_engine_metrics_prometheus(eh, bp, cap, np);
    check_status("raptor_engine_metrics_prometheus", st, &f);
    if (st == RAPTOR_OK) {
      CHECK(n > 100 && n < bufsize);
      if (!query) {
        CHECK(strlen(buf) == n && strncmp(buf, "# ", 2) == 0 && buf[n - 1] == '\n');
        for (size_t i = n + 1; i < bufsize; i++) CHECK(buf[i] == 'x');
      }
    } else {
      CHECK(n == 77777);
      for (size_t i = 0; i < bufsize; i++) CHECK(buf[i] == 'x');
    }
    free(base);
  } else if (k < 15) { /* shutdown's bad inputs: nothing is shut down */
    raptor_engine_t* eh = rnd(2) ? eng : eng2;
    int32_t mode = (int32_t)rnd(2);
    int64_t to = (int64_t)rnd(3) - 1;
    if (rnd(2)) {
      eh = bad_handle(0, &what);
      add_fault(&f, RAPTOR_ERR_INVALID_HANDLE, what);
    }
    if (f.n == 0 || rnd(2)) {
      mode = rnd(2) ? -1 - (int32_t)rnd(100) : 2 + (int32_t)rnd(1000);
      if (rnd(4) == 0) mode = (int32_t)next64() | 0x40000000;
      add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "mode unknown");
    }
    check_status("raptor_engine_shutdown", raptor_engine_shutdown(eh, mode, to), &f);
    /* the live engines still serve */
    call_t c;
    make_valid(&c);
    CHECK(raptor_encode(model, &c.b, &c.o) == RAPTOR_OK);
    call_free(&c);
  } else {
    fuzz_shutdown_cycle();
  }
}

/* ------------------------------------------------------------------ the other functions */

static void fuzz_info_stats(void) {
  faults_t f = {0};
  const char* what;
  if (rnd(2)) {
    raptor_model_info_t in;
    memset(&in, 0x5a, sizeof in);
    in.struct_size = sizeof in;
    raptor_model_t* mh = rnd(2) ? model2 : model;
    raptor_model_info_t* ip = &in;
    if (rnd(3) == 0) { mh = bad_handle(1, &what); add_fault(&f, RAPTOR_ERR_INVALID_HANDLE, what); }
    if (rnd(3) == 0) { in.struct_size = rnd(2) ? 0 : sizeof in + 8; add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "info.struct_size"); }
    if (rnd(6) == 0) { ip = NULL; add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "info NULL"); }
    raptor_status_t st = raptor_model_get_info(mh, ip);
    check_status("raptor_model_get_info", st, &f);
    if (st != RAPTOR_OK) CHECK(in.vocab_size == 0x5a5a5a5a); /* untouched */
  } else {
    raptor_engine_stats_t s;
    memset(&s, 0x5a, sizeof s);
    s.struct_size = sizeof s;
    raptor_engine_t* eh = rnd(2) ? eng2 : eng;
    raptor_engine_stats_t* sp = &s;
    if (rnd(3) == 0) { eh = bad_handle(0, &what); add_fault(&f, RAPTOR_ERR_INVALID_HANDLE, what); }
    if (rnd(3) == 0) { s.struct_size = rnd(2) ? 0 : sizeof s - 8; add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "stats.struct_size"); }
    if (rnd(6) == 0) { sp = NULL; add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "stats NULL"); }
    raptor_status_t st = raptor_engine_get_stats(eh, sp);
    check_status("raptor_engine_get_stats", st, &f);
    if (st != RAPTOR_OK) CHECK(s.requests_submitted == 0x5a5a5a5a5a5a5a5aull);
  }
}

static void fuzz_tokenize(void) {
  faults_t f = {0};
  const char* what;
  char text[200];
  size_t len = rnd(sizeof text);
  for (size_t i = 0; i < len; i++) text[i] = (char)(rnd(4) ? 'a' + rnd(26) : rnd(256)); /* any bytes, invalid UTF-8 too */
  raptor_model_t* mh = model;
  const char* tp = text;
  size_t tl = len;
  int32_t max_tokens = rnd(2) ? 0 : 2 + (int32_t)rnd(60);
  void* base;
  size_t cap = 256;
  int32_t* ids = any_align(cap * 4, &base);
  int32_t* idp = ids;
  size_t n = 77777, *np = &n;
  int small = 0;
  switch (rnd(10)) {
    case 0: mh = bad_handle(1, &what); add_fault(&f, RAPTOR_ERR_INVALID_HANDLE, what); break;
    case 1: if (len > 0) { tp = NULL; add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "text NULL with a length"); } break;
    case 2: np = NULL; add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "n_ids NULL"); break;
    case 3: idp = NULL; add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "ids NULL with capacity"); break;
    case 4: max_tokens = rnd(2) ? 1 : -1 - (int32_t)rnd(1000); add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "max_tokens 1 or negative"); break;
    case 5: tl = SIZE_MAX - rnd(4); add_fault(&f, RAPTOR_ERR_OUT_OF_RANGE, "text_len oversized"); break;
    case 6: mh = model2; add_fault(&f, RAPTOR_ERR_UNSUPPORTED, "model without a vocabulary"); break;
    case 7: small = 1; break;
    default: break;
  }
  if (small) { /* capacity 2 holds only [CLS] [SEP] */
    size_t need = 0;
    CHECK(raptor_model_tokenize(model, text, len, max_tokens, NULL, 0, &need) == RAPTOR_OK);
    cap = need > 2 ? 2 : need;
    if (need > cap) add_fault(&f, RAPTOR_ERR_BUFFER_TOO_SMALL, "capacity short");
  }
  raptor_status_t st = raptor_model_tokenize(mh, tp, tl, max_tokens, idp, cap, np);
  check_status("raptor_model_tokenize", st, &f);
  if (st != RAPTOR_OK) {
    CHECK(n == 77777);
  } else {
    CHECK(n >= 2 && n <= cap && (max_tokens == 0 || n <= (size_t)max_tokens));
    for (size_t i = 0; i < n; i++) CHECK(get_i32(ids, i) >= 0 && get_i32(ids, i) < info.vocab_size);
  }
  free(base);
}

static void fuzz_requests(void) {
  /* Every request function with a bad handle; request_error answers "". */
  const char* what;
  raptor_request_t* r = bad_handle(2, &what);
  faults_t f = {0};
  add_fault(&f, RAPTOR_ERR_INVALID_HANDLE, what);
  int32_t done = 55;
  raptor_status_t res = 66;
  switch (rnd(5)) {
    case 0: check_status("raptor_request_poll", raptor_request_poll(r, &done, &res), &f); break;
    case 1: check_status("raptor_request_wait", raptor_request_wait(r, (int64_t)rnd(3) - 1, &res), &f); break;
    case 2: check_status("raptor_request_cancel", raptor_request_cancel(r), &f); break;
    case 3: CHECK(raptor_request_error(r) != NULL && raptor_request_error(r)[0] == 0); break;
    default: raptor_request_free(r); break; /* ignored, no crash */
  }
  CHECK(done == 55 && res == 66);
}

static void fuzz_frees(void) {
  /* The frees accept NULL and detect freed, foreign and wrong-kind handles. */
  const char* what;
  switch (rnd(3)) {
    case 0: raptor_engine_free(bad_handle(0, &what)); break;
    case 1: raptor_model_free(bad_handle(1, &what)); break;
    default: raptor_request_free(bad_handle(2, &what)); break;
  }
  /* whatever was passed, the live handles still work */
  raptor_model_info_t in;
  in.struct_size = sizeof in;
  CHECK(raptor_model_get_info(model, &in) == RAPTOR_OK);
}

static void fuzz_load_from_memory(void) {
  faults_t f = {0};
  const char* what;
  unsigned char* img = malloc(image_size);
  memcpy(img, image, image_size);
  raptor_engine_t* eh = eng2;
  const void* data = img;
  size_t size = image_size;
  raptor_model_t* sentinel = (raptor_model_t*)(uintptr_t)0x7171;
  raptor_model_t *out = sentinel, **outp = &out;
  int corrupt = 0;
  switch (rnd(8)) {
    case 0: eh = bad_handle(0, &what); add_fault(&f, RAPTOR_ERR_INVALID_HANDLE, what); break;
    case 1: data = NULL; add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "data NULL"); break;
    case 2: size = 0; add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "size 0"); break;
    case 3: outp = NULL; add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "out NULL"); break;
    case 4: size = 1 + rnd((uint32_t)image_size - 1); add_fault(&f, RAPTOR_ERR_INVALID_MODEL, "truncated image"); break; /* 0 is case 2 */
    case 5: /* flip bytes anywhere: the checksums catch them (or the bytes did not matter) */
      for (int k = 1 + (int)rnd(4); k > 0; k--) img[rnd((uint32_t)image_size)] ^= (unsigned char)(1 + rnd(255));
      corrupt = 1;
      break;
    case 6: size = SIZE_MAX - rnd(100); add_fault(&f, RAPTOR_ERR_OUT_OF_RANGE, "size oversized"); break;
    default: break;
  }
  raptor_status_t st = raptor_model_load_from_memory(eh, data, size, outp);
  if (corrupt) {
    CHECK(st == RAPTOR_OK || st == RAPTOR_ERR_INVALID_MODEL);
    if (st != RAPTOR_OK) CHECK(strlen(raptor_last_error()) > 0);
  } else {
    check_status("raptor_model_load_from_memory", st, &f);
  }
  if (st == RAPTOR_OK) {
    CHECK(out != sentinel);
    raptor_model_free(out);
  } else {
    CHECK(out == sentinel);
  }
  free(img);
}

static void fuzz_engine_create(void) {
  faults_t f = {0};
  raptor_engine_options_t o;
  raptor_engine_options_default(&o);
  o.backend = RAPTOR_BACKEND_CPU;
  o.worker_threads = 1;
  raptor_engine_t* sentinel = (raptor_engine_t*)(uintptr_t)0x6161;
  raptor_engine_t *out = sentinel, **outp = &out;
  const raptor_engine_options_t* op = &o;
  int cuda = 0;
  switch (rnd(11)) {
    case 0: o.struct_size = rnd(2) ? 0 : sizeof o + 8 * (1 + rnd(4)); add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "struct_size"); break;
    case 1: o.backend = rnd(2) ? -1 - (int32_t)rnd(5) : 3 + (int32_t)rnd(100); add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "backend"); break;
    case 2: o.compute_dtype = rnd(2) ? -1 : 3 + (int32_t)rnd(9); add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "compute_dtype"); break;
    case 3: o.worker_threads = -1 - (int32_t)rnd(100); add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "worker_threads"); break;
    case 4: o.device = -1 - (int32_t)rnd(100); add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "device"); break;
    case 5: o.queue_capacity = -(int64_t)rnd(1000); add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "queue_capacity"); break;
    case 6: o.max_batch_tokens = -(int64_t)rnd(1000); add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "max_batch_tokens"); break;
    case 7: o.max_queue_delay_us = -1 - (int64_t)rnd(1000); add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "max_queue_delay_us"); break;
    case 8: outp = NULL; add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "out NULL"); break;
    case 9: o.backend = RAPTOR_BACKEND_CUDA; cuda = 1; break;
    default: if (rnd(2)) op = NULL; break; /* NULL options: the defaults */
  }
  raptor_status_t st = raptor_engine_create(op, outp);
  if (cuda) {
    CHECK(st == RAPTOR_OK || st == RAPTOR_ERR_BACKEND_UNAVAILABLE);
  } else {
    check_status("raptor_engine_create", st, &f);
  }
  if (st == RAPTOR_OK) {
    CHECK(out != sentinel);
    raptor_engine_free(out);
  } else {
    CHECK(out == sentinel);
  }
}

static void fuzz_misc(void) {
  /* status names of any value; log callbacks with bad levels. */
  raptor_status_t s = (raptor_status_t)next64();
  const char* name = raptor_status_name(s);
  CHECK(name != NULL && strlen(name) > 0);
  faults_t f = {0};
  int32_t level = rnd(2) ? (int32_t)rnd(4) : (int32_t)next64();
  if (level < 0 || level > 3) add_fault(&f, RAPTOR_ERR_INVALID_ARGUMENT, "log level");
  check_status("raptor_set_log_callback", raptor_set_log_callback(NULL, level, NULL), &f);
  raptor_set_log_callback(NULL, RAPTOR_LOG_ERROR, NULL);
}

/* ------------------------------------------------------------------ main */

static raptor_engine_stats_t stats_of(raptor_engine_t* e) {
  raptor_engine_stats_t s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  CHECK(raptor_engine_get_stats(e, &s) == RAPTOR_OK);
  return s;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

int main(int argc, char** argv) {
  const char* dir = argc > 1 ? argv[1] : getenv("RAPTOR_TESTMODELS");
  long iterations = argc > 2 ? atol(argv[2]) : 20000;
  seed = argc > 3 ? strtoull(argv[3], NULL, 10) : 1;
  if (!dir) {
    fprintf(stderr, "usage: fuzz_abi MODEL_DIR [ITERATIONS [SEED]]\n");
    return 2;
  }
  rng = seed;
  const char* be = getenv("RAPTOR_TEST_BACKEND");
  if (be && strcmp(be, "cuda") == 0) {
    backend = RAPTOR_BACKEND_CUDA;
    on_gpu = 1;
  }
  char bert[4096], bigbird[4096], cls[4096];
  snprintf(bert, sizeof bert, "%s/tiny-bert.raptor", dir);
  snprintf(cls, sizeof cls, "%s/tiny-bert-cls.raptor", dir);
  snprintf(bigbird, sizeof bigbird, "%s/tiny-bigbird.raptor", dir);
  FILE* fp = fopen(bert, "rb");
  if (!fp) {
    fprintf(stderr, "fuzz_abi: cannot open %s\n", bert);
    return 2;
  }
  fseek(fp, 0, SEEK_END);
  image_size = (size_t)ftell(fp);
  fseek(fp, 0, SEEK_SET);
  image = malloc(image_size);
  if (fread(image, 1, image_size, fp) != image_size) return 2;
  fclose(fp);
  raptor_set_log_callback(NULL, RAPTOR_LOG_ERROR, NULL);

  /* A probe engine for the process-wide figures, created first. */
  raptor_engine_options_t o;
  raptor_engine_options_default(&o);
  o.backend = RAPTOR_BACKEND_CPU;
  raptor_engine_t* probe = NULL;
  CHECK(raptor_engine_create(&o, &probe) == RAPTOR_OK);
  raptor_engine_stats_t base = stats_of(probe);

  o.worker_threads = 2;
  o.backend = backend;
  CHECK(raptor_engine_create(&o, &eng) == RAPTOR_OK);
  CHECK(raptor_engine_create(&o, &eng2) == RAPTOR_OK);
  CHECK(raptor_engine_create(&o, &freed_engine) == RAPTOR_OK);
  CHECK(raptor_model_load(eng, bert, &model) == RAPTOR_OK);
  CHECK(raptor_model_load(eng2, bigbird, &model2) == RAPTOR_OK); /* no vocabulary */
  CHECK(raptor_model_load(eng, bert, &freed_model) == RAPTOR_OK);
  CHECK(raptor_model_load(eng, cls, &model_cls) == RAPTOR_OK);
  raptor_submit_options_default(NULL); /* ignored */
  raptor_output_init(NULL, sizeof(raptor_output_t));
  if (on_gpu) {
    printf("fuzz_abi: engines under test on backend %s\n", raptor_engine_backend(eng));
  }
  info.struct_size = sizeof info;
  CHECK(raptor_model_get_info(model, &info) == RAPTOR_OK);
  {
    call_t c;
    make_valid(&c);
    CHECK(raptor_submit(model, &c.b, &c.o, NULL, NULL, &freed_request) == RAPTOR_OK);
    raptor_request_wait(freed_request, -1, NULL);
    raptor_request_free(freed_request);
    call_free(&c);
  }
  raptor_model_free(freed_model);
  raptor_engine_free(freed_engine);
  if (failures) return 1;

  long counts[11] = {0};
  for (iter = 0; iter < iterations; iter++) {
    int k = (int)rnd(20);
    int which = k < 6 ? 0 : k < 8 ? 1 : k < 9 ? 8 : k < 10 ? 2 : k < 11 ? 3 : k < 12 ? 4 : k < 13 ? 5 : k < 14 ? 6
              : k < 16 ? 9 : k < 18 ? 10 : 7;
    counts[which]++;
    switch (which) {
      case 0: fuzz_encode(0); break;
      case 1: fuzz_encode(1); break;
      case 8: fuzz_encode(2); break;
      case 9: fuzz_heads(); break;
      case 10: fuzz_sched(); break;
      case 2: fuzz_info_stats(); break;
      case 3: fuzz_tokenize(); break;
      case 4: fuzz_requests(); break;
      case 5: fuzz_frees(); break;
      case 6: fuzz_load_from_memory(); break;
      default: if (rnd(4) == 0) fuzz_engine_create(); else fuzz_misc(); break;
    }
    if (failures > 30) break;
  }

  raptor_engine_stats_t mid = stats_of(eng);
  raptor_model_free(model);
  raptor_model_free(model2);
  raptor_model_free(model_cls);
  raptor_engine_free(eng);
  raptor_engine_free(eng2);

  /* Every handle made in the loop is gone; goroutines come back. */
  raptor_engine_stats_t end = stats_of(probe);
  for (int i = 0; i < 100 && end.process_goroutines > base.process_goroutines + 2; i++) {
    sleep_ms(20);
    end = stats_of(probe);
  }
  CHECK(end.process_handles == base.process_handles);
  CHECK(end.process_goroutines <= base.process_goroutines + 2);
  printf("fuzz_abi: seed %llu, %ld iterations (encode %ld, submit %ld, info/stats %ld, tokenize %ld, "
         "requests %ld, frees %ld, load_from_memory %ld, create/misc %ld, submit_with_options %ld, heads %ld, "
         "metrics/shutdown %ld incl. %ld whole shutdowns); %d checks, %d failures\n",
         (unsigned long long)seed, iter, counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6],
         counts[7], counts[8], counts[9], counts[10], shutdown_cycles, checks, failures);
  printf("fuzz_abi: engine stats: %llu completed, %llu failed, %llu cancelled; handles %lld -> %lld, goroutines %lld -> %lld, "
         "heap %lld -> %lld bytes\n",
         (unsigned long long)mid.requests_completed, (unsigned long long)mid.requests_failed,
         (unsigned long long)mid.requests_cancelled, (long long)base.process_handles, (long long)end.process_handles,
         (long long)base.process_goroutines, (long long)end.process_goroutines, (long long)base.process_heap_bytes,
         (long long)end.process_heap_bytes);
  raptor_engine_free(probe);
  free(image);
  return failures ? 1 : 0;
}
