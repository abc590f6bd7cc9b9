/* Task heads through the C ABI (issue 11): raptor_model_info_t's head fields
 * at both struct sizes, raptor_model_label, raptor_model_logits_shape, logits
 * in raptor_output_t (sync and async, v1-size outputs still accepted), and
 * every bad input: a model without a head, a too small logits buffer, bad ids
 * and sizes.
 *
 * Usage: test_heads DIR   (DIR holds tiny-bert.raptor and tiny-bert-cls.raptor,
 * written by tests/tools/mkmodel). */
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

_Static_assert(RAPTOR_OUTPUT_V1_SIZE == offsetof(raptor_output_t, logits), "output v1 size");
_Static_assert(RAPTOR_MODEL_INFO_V1_SIZE >= offsetof(raptor_model_info_t, head_kind) &&
                   RAPTOR_MODEL_INFO_V1_SIZE < offsetof(raptor_model_info_t, head_kind) + sizeof(size_t),
               "model info v1 size");

static raptor_model_t* load(raptor_engine_t* e, const char* dir, const char* name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  raptor_model_t* m = NULL;
  if (raptor_model_load(e, path, &m) != RAPTOR_OK) {
    fprintf(stderr, "cannot load %s: %s\n", path, raptor_last_error());
    exit(2);
  }
  return m;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s TESTMODELS_DIR\n", argv[0]);
    return 2;
  }
  raptor_engine_options_t eo;
  raptor_engine_options_default(&eo);
  eo.backend = RAPTOR_BACKEND_CPU;
  raptor_engine_t* e = NULL;
  EXPECT(raptor_engine_create(&eo, &e), RAPTOR_OK);
  raptor_model_t* cls = load(e, argv[1], "tiny-bert-cls.raptor");
  raptor_model_t* bare = load(e, argv[1], "tiny-bert.raptor");

  /* Model info: current size has the head; v1 size leaves the bytes after it alone. */
  raptor_model_info_t info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  EXPECT(raptor_model_get_info(cls, &info), RAPTOR_OK);
  CHECK(info.head_kind == RAPTOR_HEAD_SEQUENCE_CLASSIFICATION && info.num_labels == 3 && info.has_pooler);
  memset(&info, 0x5a, sizeof info);
  info.struct_size = RAPTOR_MODEL_INFO_V1_SIZE;
  EXPECT(raptor_model_get_info(cls, &info), RAPTOR_OK);
  CHECK(info.struct_size == RAPTOR_MODEL_INFO_V1_SIZE && info.hidden_size == 32);
  /* head_kind may sit in v1's tail padding (LP64), which the library may
   * write; num_labels lies past the v1 struct and must stay untouched. */
  CHECK(info.num_labels == 0x5a5a5a5a);
  info.struct_size = RAPTOR_MODEL_INFO_V1_SIZE + 4;
  EXPECT(raptor_model_get_info(cls, &info), RAPTOR_ERR_INVALID_ARGUMENT);
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  EXPECT(raptor_model_get_info(bare, &info), RAPTOR_OK);
  CHECK(info.head_kind == RAPTOR_HEAD_NONE && info.num_labels == 0);

  /* Labels: size query, exact buffer, too small, bad id, no head. */
  const char* names[] = {"negative", "neutral", "positive"};
  for (int32_t id = 0; id < 3; id++) {
    size_t n = 99;
    EXPECT(raptor_model_label(cls, id, NULL, 0, &n), RAPTOR_OK);
    CHECK(n == strlen(names[id]));
    char buf[16];
    memset(buf, 'x', sizeof buf);
    EXPECT(raptor_model_label(cls, id, buf, n + 1, &n), RAPTOR_OK);
    CHECK(strcmp(buf, names[id]) == 0);
    size_t before = 77;
    EXPECT(raptor_model_label(cls, id, buf, n, &before), RAPTOR_ERR_BUFFER_TOO_SMALL);
    CHECK(before == 77); /* out parameters untouched on error */
  }
  size_t n = 0;
  char buf[16];
  EXPECT(raptor_model_label(cls, 3, buf, sizeof buf, &n), RAPTOR_ERR_OUT_OF_RANGE);
  EXPECT(raptor_model_label(cls, -1, buf, sizeof buf, &n), RAPTOR_ERR_OUT_OF_RANGE);
  EXPECT(raptor_model_label(cls, 0, buf, sizeof buf, NULL), RAPTOR_ERR_INVALID_ARGUMENT);
  EXPECT(raptor_model_label(cls, 0, NULL, 4, &n), RAPTOR_ERR_INVALID_ARGUMENT);
  EXPECT(raptor_model_label(bare, 0, buf, sizeof buf, &n), RAPTOR_ERR_UNSUPPORTED);
  EXPECT(raptor_model_label(NULL, 0, buf, sizeof buf, &n), RAPTOR_ERR_INVALID_HANDLE);

  /* A batch of three sequences; the second alone for invariance. */
  int32_t ids[] = {2, 40, 41, 42, 3, 2, 48, 49, 3, 2, 5, 3};
  int32_t cu[] = {0, 5, 9, 12};
  raptor_batch_t b;
  raptor_batch_default(&b);
  b.token_ids = ids, b.num_tokens = 12, b.cu_seqlens = cu, b.num_seqs = 3;
  int64_t rows = -1, cols = -1;
  EXPECT(raptor_model_logits_shape(cls, &b, &rows, &cols), RAPTOR_OK);
  CHECK(rows == 3 && cols == 3);
  EXPECT(raptor_model_logits_shape(bare, &b, &rows, &cols), RAPTOR_ERR_UNSUPPORTED);
  EXPECT(raptor_model_logits_shape(cls, NULL, &rows, &cols), RAPTOR_ERR_INVALID_ARGUMENT);
  EXPECT(raptor_model_logits_shape(cls, &b, NULL, &cols), RAPTOR_ERR_INVALID_ARGUMENT);
  int32_t bad_cu[] = {0, 5, 5, 12};
  raptor_batch_t bb = b;
  bb.cu_seqlens = bad_cu;
  EXPECT(raptor_model_logits_shape(cls, &bb, &rows, &cols), RAPTOR_ERR_INVALID_ARGUMENT);

  float logits[9], pooled[3 * 32];
  raptor_output_t o;
  raptor_output_init(&o, sizeof o);
  CHECK(o.struct_size == sizeof o && o.logits == NULL && o.logits_bytes == 0 && o.pooling == RAPTOR_POOLING_MEAN);
  o.logits = logits, o.logits_bytes = sizeof logits;
  EXPECT(raptor_encode(cls, &b, &o), RAPTOR_OK);
  int finite = 1;
  for (int i = 0; i < 9; i++) finite &= isfinite(logits[i]) && logits[i] != 0;
  CHECK(finite);

  /* Logits with other outputs, fp16 hidden/pooled: logits stay fp32 and equal. */
  float logits2[9];
  uint16_t pooled16[3 * 32];
  raptor_output_t o2 = o;
  o2.logits = logits2, o2.dtype = RAPTOR_DTYPE_FP16, o2.pooled = pooled16, o2.pooled_bytes = sizeof pooled16;
  EXPECT(raptor_encode(cls, &b, &o2), RAPTOR_OK);
  CHECK(memcmp(logits, logits2, sizeof logits) == 0);

  /* Batch invariance: the second sequence alone gives the same row, bit for bit. */
  int32_t cu1[] = {0, 4};
  raptor_batch_t b1 = b;
  b1.token_ids = ids + 5, b1.num_tokens = 4, b1.cu_seqlens = cu1, b1.num_seqs = 1;
  float one[3];
  raptor_output_t o1 = o;
  o1.logits = one, o1.logits_bytes = sizeof one;
  EXPECT(raptor_encode(cls, &b1, &o1), RAPTOR_OK);
  CHECK(memcmp(one, logits + 3, sizeof one) == 0);

  /* Too small a logits buffer; no head; device memory. */
  raptor_output_t small = o;
  small.logits_bytes = sizeof logits - 1;
  EXPECT(raptor_encode(cls, &b, &small), RAPTOR_ERR_BUFFER_TOO_SMALL);
  CHECK(strstr(raptor_last_error(), "logits") != NULL);
  EXPECT(raptor_encode(bare, &b, &o), RAPTOR_ERR_UNSUPPORTED);
  CHECK(strstr(raptor_last_error(), "head") != NULL);

  /* A v1-size output (raptor_output_default) still works and never reads logits. */
  raptor_output_t v1;
  raptor_output_default(&v1);
  CHECK(v1.struct_size == RAPTOR_OUTPUT_V1_SIZE);
  v1.pooled = pooled, v1.pooled_bytes = sizeof pooled;
  EXPECT(raptor_encode(cls, &b, &v1), RAPTOR_OK);
  EXPECT(raptor_encode(bare, &b, &v1), RAPTOR_OK);
  raptor_output_t odd;
  memset(&odd, 0x33, sizeof odd);
  raptor_output_init(&odd, sizeof odd + 8); /* unknown size: untouched */
  CHECK(odd.struct_size == 0x3333333333333333ull || sizeof(size_t) != 8);
  v1.struct_size = RAPTOR_OUTPUT_V1_SIZE + 8;
  EXPECT(raptor_encode(cls, &b, &v1), RAPTOR_ERR_INVALID_ARGUMENT);

  /* Asynchronous: the same logits. */
  float alogits[9];
  raptor_output_t ao = o;
  ao.logits = alogits;
  raptor_request_t* req = NULL;
  EXPECT(raptor_submit(cls, &b, &ao, NULL, NULL, &req), RAPTOR_OK);
  raptor_status_t result = -1;
  EXPECT(raptor_request_wait(req, -1, &result), RAPTOR_OK);
  CHECK(result == RAPTOR_OK);
  CHECK(memcmp(alogits, logits, sizeof logits) == 0);
  raptor_request_free(req);
  req = NULL;
  EXPECT(raptor_submit(cls, &b, &small, NULL, NULL, &req), RAPTOR_ERR_BUFFER_TOO_SMALL);
  EXPECT(raptor_submit(bare, &b, &o, NULL, NULL, &req), RAPTOR_ERR_UNSUPPORTED);
  CHECK(req == NULL);

  printf("logits:");
  for (int s = 0; s < 3; s++) printf(" [% .4f % .4f % .4f]", logits[3 * s], logits[3 * s + 1], logits[3 * s + 2]);
  printf("\n");
  raptor_model_free(cls);
  raptor_model_free(bare);
  raptor_engine_free(e);
  if (failures) {
    fprintf(stderr, "test_heads: %d failure(s)\n", failures);
    return 1;
  }
  printf("test_heads: all checks passed\n");
  return 0;
}
