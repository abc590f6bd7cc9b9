/*
 * The real all-MiniLM-L6-v2 through the C ABI: its tokenizer gives BERT's
 * known ids, and its normalised mean-pooled embeddings are unit vectors that
 * rank a paraphrase above an unrelated sentence.
 *
 * Usage: test_minilm MODEL_FILE (or RAPTOR_MODEL=MODEL_FILE test_minilm).
 * Exits 77 (skipped) when the model file is absent: ./build.sh prepares it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "raptor.h"

static int failures;

#define CHECK(cond)                                                                           \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, #cond, \
              raptor_last_error());                                                           \
      failures++;                                                                             \
    }                                                                                         \
  } while (0)

enum { MAXTOK = 128, NSENT = 3 };

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : getenv("RAPTOR_MODEL");
  struct stat st;
  if (path == NULL || stat(path, &st) != 0) {
    fprintf(stderr, "SKIP: the all-MiniLM-L6-v2 model file (%s) is absent; ./build.sh prepares it\n",
            path ? path : "RAPTOR_MODEL unset");
    return 77;
  }
  raptor_set_log_callback(NULL, RAPTOR_LOG_WARN, NULL);
  raptor_engine_options_t opts;
  raptor_engine_options_default(&opts);
  opts.backend = RAPTOR_BACKEND_CPU;
  raptor_engine_t* e = NULL;
  raptor_model_t* m = NULL;
  if (raptor_engine_create(&opts, &e) != RAPTOR_OK || raptor_model_load(e, path, &m) != RAPTOR_OK) {
    fprintf(stderr, "cannot load %s: %s\n", path, raptor_last_error());
    return 1;
  }
  raptor_model_info_t info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK(raptor_model_get_info(m, &info) == RAPTOR_OK);
  CHECK(info.family == RAPTOR_FAMILY_BERT && info.hidden_size == 384 && info.num_layers == 6);
  CHECK(info.vocab_size == 30522 && info.has_tokenizer);
  const int H = info.hidden_size;

  /* bert-base-uncased ids */
  int32_t ids[MAXTOK];
  size_t n = 0;
  CHECK(raptor_model_tokenize(m, "Hello, World!", 13, 0, ids, MAXTOK, &n) == RAPTOR_OK);
  const int32_t want[] = {101, 7592, 1010, 2088, 999, 102};
  CHECK(n == 6 && memcmp(ids, want, sizeof want) == 0);

  const char* sents[NSENT] = {"A man is eating food.", "A man is eating a piece of bread.",
                              "The girl is carrying a baby."};
  int32_t all[NSENT * MAXTOK];
  int32_t cu[NSENT + 1] = {0};
  for (int s = 0; s < NSENT; s++) {
    size_t k = 0;
    CHECK(raptor_model_tokenize(m, sents[s], strlen(sents[s]), 0, all + cu[s], MAXTOK, &k) == RAPTOR_OK);
    cu[s + 1] = cu[s] + (int32_t)k;
  }
  raptor_batch_t b;
  raptor_batch_default(&b);
  b.token_ids = all;
  b.num_tokens = (size_t)cu[NSENT];
  b.cu_seqlens = cu;
  b.num_seqs = NSENT;
  float* emb = calloc((size_t)NSENT * (size_t)H, sizeof(float));
  raptor_output_t o;
  raptor_output_default(&o);
  o.pooled = emb;
  o.pooled_bytes = (size_t)NSENT * (size_t)H * sizeof(float);
  o.normalize = 1;
  CHECK(raptor_encode(m, &b, &o) == RAPTOR_OK);
  double cos01 = 0, cos02 = 0;
  for (int s = 0; s < NSENT; s++) {
    double ss = 0;
    for (int j = 0; j < H; j++) ss += (double)emb[s * H + j] * emb[s * H + j];
    CHECK(fabs(ss - 1) < 1e-5);
  }
  for (int j = 0; j < H; j++) {
    cos01 += (double)emb[j] * emb[H + j];
    cos02 += (double)emb[j] * emb[2 * H + j];
  }
  fprintf(stderr, "cosine(paraphrase) %.4f, cosine(unrelated) %.4f\n", cos01, cos02);
  CHECK(cos01 > 0.6 && cos02 < 0.3 && cos01 > cos02);
  free(emb);
  raptor_engine_free(e);
  fprintf(stderr, "%s\n", failures ? "FAIL" : "PASS");
  return failures ? 1 : 0;
}
