/* The C side of libraptor: the public functions of include/raptor.h with
 * their exact prototypes, each forwarding to a hidden Go export, plus the
 * thread-local state Go cannot hold (goroutines are not threads). */
#include <string.h>

#include "shim.h"

/* The Go exports (raptorgo_*) are internal: keep them out of the dynamic
 * symbol table. Only the raptor_* functions below are the library's ABI. */
#pragma GCC visibility push(hidden)
#include "_cgo_export.h"
#pragma GCC visibility pop

/* ---- thread-local state ------------------------------------------------ */

static __thread char last_error[1024];
static __thread int completion_depth;
static __thread int log_depth;

void raptorc_set_error(const char* msg, size_t n) {
  if (n >= sizeof last_error) n = sizeof last_error - 1;
  memcpy(last_error, msg, n);
  last_error[n] = '\0';
}

int raptorc_in_completion(void) { return completion_depth > 0; }
int raptorc_in_log(void) { return log_depth > 0; }

void raptorc_call_completion(uintptr_t fn, uintptr_t req, raptor_status_t status, uintptr_t user_data) {
  completion_depth++;
  ((raptor_completion_fn)fn)((raptor_request_t*)req, status, (void*)user_data);
  completion_depth--;
}

void raptorc_call_log(uintptr_t fn, int32_t level, const char* msg, uintptr_t user_data) {
  log_depth++;
  ((raptor_log_fn)fn)(level, msg, (void*)user_data);
  log_depth--;
}

/* ---- versions, errors, logging ------------------------------------------ */

uint32_t raptor_abi_version(void) { return RAPTOR_ABI_VERSION; }

const char* raptor_version(void) { return raptorgo_version(); }

const char* raptor_status_name(raptor_status_t status) { return raptorgo_status_name(status); }

const char* raptor_last_error(void) { return last_error; }

raptor_status_t raptor_set_log_callback(raptor_log_fn fn, int32_t min_level, void* user_data) {
  return raptorgo_set_log_callback((uintptr_t)fn, min_level, (uintptr_t)user_data);
}

/* ---- engine -------------------------------------------------------------- */

void raptor_engine_options_default(raptor_engine_options_t* opts) {
  raptorgo_engine_options_default(opts);
}

raptor_status_t raptor_engine_create(const raptor_engine_options_t* opts, raptor_engine_t** out) {
  return raptorgo_engine_create((raptor_engine_options_t*)opts, (uintptr_t*)out);
}

void raptor_engine_free(raptor_engine_t* engine) { raptorgo_engine_free((uintptr_t)engine); }

const char* raptor_engine_backend(const raptor_engine_t* engine) {
  return raptorgo_engine_backend((uintptr_t)engine);
}

raptor_status_t raptor_engine_get_stats(const raptor_engine_t* engine, raptor_engine_stats_t* stats) {
  return raptorgo_engine_get_stats((uintptr_t)engine, stats);
}

/* ---- models -------------------------------------------------------------- */

raptor_status_t raptor_model_load(raptor_engine_t* engine, const char* path, raptor_model_t** out) {
  return raptorgo_model_load((uintptr_t)engine, (char*)path, (uintptr_t*)out);
}

raptor_status_t raptor_model_load_from_memory(raptor_engine_t* engine, const void* data, size_t size,
                                              raptor_model_t** out) {
  return raptorgo_model_load_from_memory((uintptr_t)engine, (void*)data, size, (uintptr_t*)out);
}

void raptor_model_free(raptor_model_t* model) { raptorgo_model_free((uintptr_t)model); }

raptor_status_t raptor_model_get_info(const raptor_model_t* model, raptor_model_info_t* info) {
  return raptorgo_model_get_info((uintptr_t)model, info);
}

raptor_status_t raptor_model_tokenize(const raptor_model_t* model, const char* text, size_t text_len,
                                      int32_t max_tokens, int32_t* ids, size_t capacity, size_t* n_ids) {
  return raptorgo_model_tokenize((uintptr_t)model, (char*)text, text_len, max_tokens, ids, capacity, n_ids);
}

/* ---- batches, outputs, encoding ------------------------------------------ */

void raptor_batch_default(raptor_batch_t* batch) {
  if (batch == NULL) return;
  memset(batch, 0, sizeof *batch);
  batch->struct_size = sizeof *batch;
}

void raptor_output_default(raptor_output_t* out) {
  /* Fills the ABI v1 part only: a host built against an older header has a
   * smaller struct. raptor_output_init fills the appended fields too. */
  if (out == NULL) return;
  memset(out, 0, RAPTOR_OUTPUT_V1_SIZE);
  out->struct_size = RAPTOR_OUTPUT_V1_SIZE;
  out->memory = RAPTOR_MEMORY_HOST;
  out->dtype = RAPTOR_DTYPE_FP32;
  out->pooling = RAPTOR_POOLING_MEAN;
}

raptor_status_t raptor_encode(raptor_model_t* model, const raptor_batch_t* batch, const raptor_output_t* output) {
  return raptorgo_encode((uintptr_t)model, (raptor_batch_t*)batch, (raptor_output_t*)output);
}

raptor_status_t raptor_submit(raptor_model_t* model, const raptor_batch_t* batch, const raptor_output_t* output,
                              raptor_completion_fn done, void* user_data, raptor_request_t** out_req) {
  return raptorgo_submit((uintptr_t)model, (raptor_batch_t*)batch, (raptor_output_t*)output, (uintptr_t)done,
                         (uintptr_t)user_data, (uintptr_t*)out_req);
}

raptor_status_t raptor_request_poll(raptor_request_t* req, int32_t* done, raptor_status_t* result) {
  return raptorgo_request_poll((uintptr_t)req, done, result);
}

raptor_status_t raptor_request_wait(raptor_request_t* req, int64_t timeout_us, raptor_status_t* result) {
  return raptorgo_request_wait((uintptr_t)req, timeout_us, result);
}

raptor_status_t raptor_request_cancel(raptor_request_t* req) { return raptorgo_request_cancel((uintptr_t)req); }

const char* raptor_request_error(raptor_request_t* req) { return raptorgo_request_error((uintptr_t)req); }

void raptor_request_free(raptor_request_t* req) { raptorgo_request_free((uintptr_t)req); }

/* ---- task heads (appended) ------------------------------------------------ */

void raptor_output_init(raptor_output_t* out, size_t struct_size) {
  if (out == NULL || (struct_size != RAPTOR_OUTPUT_V1_SIZE && struct_size != sizeof *out)) return;
  raptor_output_default(out);
  memset((char*)out + RAPTOR_OUTPUT_V1_SIZE, 0, struct_size - RAPTOR_OUTPUT_V1_SIZE);
  out->struct_size = struct_size;
}

raptor_status_t raptor_model_logits_shape(const raptor_model_t* model, const raptor_batch_t* batch,
                                          int64_t* rows, int64_t* cols) {
  return raptorgo_model_logits_shape((uintptr_t)model, (raptor_batch_t*)batch, rows, cols);
}

raptor_status_t raptor_model_label(const raptor_model_t* model, int32_t id, char* buf, size_t cap,
                                   size_t* len) {
  return raptorgo_model_label((uintptr_t)model, id, buf, cap, len);
}

/* ---- scheduling, shutdown, metrics (appended) ----------------------------- */

void raptor_submit_options_default(raptor_submit_options_t* opts) {
  if (opts == NULL) return;
  memset(opts, 0, sizeof *opts);
  opts->struct_size = sizeof *opts;
}

raptor_status_t raptor_submit_with_options(raptor_model_t* model, const raptor_batch_t* batch,
                                           const raptor_output_t* output, const raptor_submit_options_t* options,
                                           raptor_completion_fn done, void* user_data, raptor_request_t** out_req) {
  return raptorgo_submit_with_options((uintptr_t)model, (raptor_batch_t*)batch, (raptor_output_t*)output,
                                      (raptor_submit_options_t*)options, (uintptr_t)done, (uintptr_t)user_data,
                                      (uintptr_t*)out_req);
}

raptor_status_t raptor_engine_shutdown(raptor_engine_t* engine, int32_t mode, int64_t timeout_us) {
  return raptorgo_engine_shutdown((uintptr_t)engine, mode, timeout_us);
}

raptor_status_t raptor_engine_metrics_prometheus(const raptor_engine_t* engine, char* buf, size_t cap, size_t* len) {
  return raptorgo_engine_metrics_prometheus((uintptr_t)engine, buf, cap, len);
}

/* ---- several devices ------------------------------------------------------ */

void raptor_engine_options_init(raptor_engine_options_t* opts, size_t struct_size) {
  raptorgo_engine_options_init(opts, struct_size);
}

raptor_status_t raptor_engine_device_count(const raptor_engine_t* engine, int32_t* n) {
  return raptorgo_engine_device_count((uintptr_t)engine, n);
}

raptor_status_t raptor_engine_get_device_stats(const raptor_engine_t* engine, int32_t index,
                                               raptor_device_stats_t* stats) {
  return raptorgo_engine_get_device_stats((uintptr_t)engine, index, stats);
}

/* ---- warm-up --------------------------------------------------------------- */

void raptor_warmup_params_default(raptor_warmup_params_t* params) {
  if (params == NULL) return;
  memset(params, 0, sizeof *params);
  params->struct_size = sizeof *params;
  params->pooled = 1;
  params->pooling = RAPTOR_POOLING_MEAN;
}

raptor_status_t raptor_model_warmup(raptor_model_t* model, const raptor_warmup_params_t* params,
                                    int64_t* out_batches) {
  return raptorgo_model_warmup((uintptr_t)model, (raptor_warmup_params_t*)params, out_batches);
}
