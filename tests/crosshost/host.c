/* A minimal raptor host for the cross-host test (tests/python/test_cross_host.py).
 * It is compiled twice, as C (gcc) and as C++ (g++ -x c++), links
 * libraptor.so, encodes every line of an ids.jsonl file (a JSON array of token
 * ids, or {"ids": [...]}) as one packed batch on the CPU backend, and writes
 * the mean-pooled outputs [n, h] followed by the hidden states [T, h] as raw
 * float32 to OUT.
 *
 * usage: host MODEL IDS.jsonl OUT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raptor.h"

static int fail(const char* what, raptor_status_t st) {
  fprintf(stderr, "%s: %s: %s\n", what, raptor_status_name(st), raptor_last_error());
  return 1;
}

/* Appends every integer of the line's first [...] to ids. */
static size_t parse_line(const char* line, int32_t** ids, size_t* n, size_t* cap) {
  const char* p = strchr(line, '[');
  size_t count = 0;
  if (!p) return 0;
  for (p++; *p && *p != ']';) {
    char* end;
    long v = strtol(p, &end, 10);
    if (end == p) {
      p++;
      continue;
    }
    if (*n == *cap) {
      *cap = *cap ? 2 * *cap : 1024;
      *ids = (int32_t*)realloc(*ids, *cap * sizeof(int32_t));
    }
    (*ids)[(*n)++] = (int32_t)v;
    count++;
    p = end;
  }
  return count;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s MODEL IDS.jsonl OUT\n", argv[0]);
    return 2;
  }
  FILE* in = fopen(argv[2], "r");
  if (!in) {
    perror(argv[2]);
    return 1;
  }
  int32_t* ids = NULL;
  size_t n = 0, cap = 0;
  int32_t cu[4096];
  size_t seqs = 0;
  static char line[1 << 20];
  cu[0] = 0;
  while (fgets(line, sizeof line, in) && seqs + 1 < sizeof cu / sizeof cu[0]) {
    if (parse_line(line, &ids, &n, &cap) > 0) cu[++seqs] = (int32_t)n;
  }
  fclose(in);

  raptor_engine_options_t opts;
  raptor_engine_options_default(&opts);
  opts.backend = RAPTOR_BACKEND_CPU;
  raptor_engine_t* engine = NULL;
  raptor_status_t st = raptor_engine_create(&opts, &engine);
  if (st != RAPTOR_OK) return fail("raptor_engine_create", st);
  raptor_model_t* model = NULL;
  st = raptor_model_load(engine, argv[1], &model);
  if (st != RAPTOR_OK) return fail("raptor_model_load", st);
  raptor_model_info_t info;
  info.struct_size = sizeof info;
  st = raptor_model_get_info(model, &info);
  if (st != RAPTOR_OK) return fail("raptor_model_get_info", st);

  size_t h = (size_t)info.hidden_size;
  size_t total = seqs * h + n * h;
  float* outbuf = (float*)malloc(total * sizeof(float));
  raptor_batch_t batch;
  raptor_batch_default(&batch);
  batch.token_ids = ids;
  batch.num_tokens = n;
  batch.cu_seqlens = cu;
  batch.num_seqs = seqs;
  raptor_output_t out;
  raptor_output_default(&out);
  out.pooling = RAPTOR_POOLING_MEAN;
  out.pooled = outbuf;
  out.pooled_bytes = seqs * h * sizeof(float);
  out.hidden = outbuf + seqs * h;
  out.hidden_bytes = n * h * sizeof(float);
  st = raptor_encode(model, &batch, &out);
  if (st != RAPTOR_OK) return fail("raptor_encode", st);

  FILE* f = fopen(argv[3], "wb");
  if (!f || fwrite(outbuf, sizeof(float), total, f) != total || fclose(f) != 0) {
    perror(argv[3]);
    return 1;
  }
  raptor_model_free(model);
  raptor_engine_free(engine);
  free(outbuf);
  free(ids);
  fprintf(stderr, "encoded %zu sequences, %zu tokens\n", seqs, n);
  return 0;
}
