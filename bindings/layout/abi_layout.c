/* Prints the size and field offsets of every struct in include/raptor.h, one
 * "struct.field offset" or "struct sizeof size" per line. The Python and Go
 * binding tests compile it with the system C compiler and compare the numbers
 * with their own struct declarations. */
#include <stddef.h>
#include <stdio.h>

#include "raptor.h"

#define SIZE(T) printf("%s sizeof %zu\n", #T, sizeof(T))
#define OFF(T, f) printf("%s.%s %zu\n", #T, #f, offsetof(T, f))

int main(void) {
  SIZE(raptor_engine_options_t);
  OFF(raptor_engine_options_t, struct_size);
  OFF(raptor_engine_options_t, backend);
  OFF(raptor_engine_options_t, device);
  OFF(raptor_engine_options_t, compute_dtype);
  OFF(raptor_engine_options_t, worker_threads);
  OFF(raptor_engine_options_t, max_batch_tokens);
  OFF(raptor_engine_options_t, max_queue_delay_us);
  OFF(raptor_engine_options_t, queue_capacity);
  OFF(raptor_engine_options_t, seed);
  OFF(raptor_engine_options_t, kernel_cache_dir);
  OFF(raptor_engine_options_t, devices);
  OFF(raptor_engine_options_t, num_devices);
  OFF(raptor_engine_options_t, all_devices);

  SIZE(raptor_engine_stats_t);
  OFF(raptor_engine_stats_t, struct_size);
  OFF(raptor_engine_stats_t, requests_submitted);
  OFF(raptor_engine_stats_t, requests_completed);
  OFF(raptor_engine_stats_t, requests_failed);
  OFF(raptor_engine_stats_t, requests_cancelled);
  OFF(raptor_engine_stats_t, batches);
  OFF(raptor_engine_stats_t, tokens);
  OFF(raptor_engine_stats_t, queue_depth);
  OFF(raptor_engine_stats_t, live_models);
  OFF(raptor_engine_stats_t, live_requests);
  OFF(raptor_engine_stats_t, process_handles);
  OFF(raptor_engine_stats_t, process_goroutines);
  OFF(raptor_engine_stats_t, process_heap_bytes);
  OFF(raptor_engine_stats_t, queue_latency_p50_us);
  OFF(raptor_engine_stats_t, queue_latency_p99_us);
  OFF(raptor_engine_stats_t, latency_p50_us);
  OFF(raptor_engine_stats_t, latency_p99_us);
  OFF(raptor_engine_stats_t, scheduler_batches);
  OFF(raptor_engine_stats_t, scheduler_requests);
  OFF(raptor_engine_stats_t, mean_batch_requests);
  OFF(raptor_engine_stats_t, mean_batch_fill);
  OFF(raptor_engine_stats_t, padded_tokens);
  OFF(raptor_engine_stats_t, padding_ratio);
  OFF(raptor_engine_stats_t, tokens_per_second);
  OFF(raptor_engine_stats_t, device_busy_share);
  OFF(raptor_engine_stats_t, device_busy_us);
  OFF(raptor_engine_stats_t, uptime_us);
  OFF(raptor_engine_stats_t, queue_capacity);
  OFF(raptor_engine_stats_t, completed_by_status);
  OFF(raptor_engine_stats_t, rejected_by_status);

  SIZE(raptor_model_info_t);
  OFF(raptor_model_info_t, struct_size);
  OFF(raptor_model_info_t, family);
  OFF(raptor_model_info_t, vocab_size);
  OFF(raptor_model_info_t, hidden_size);
  OFF(raptor_model_info_t, num_layers);
  OFF(raptor_model_info_t, num_heads);
  OFF(raptor_model_info_t, intermediate_size);
  OFF(raptor_model_info_t, max_positions);
  OFF(raptor_model_info_t, max_sequence_length);
  OFF(raptor_model_info_t, type_vocab_size);
  OFF(raptor_model_info_t, activation);
  OFF(raptor_model_info_t, attention);
  OFF(raptor_model_info_t, block_size);
  OFF(raptor_model_info_t, random_blocks);
  OFF(raptor_model_info_t, position_offset);
  OFF(raptor_model_info_t, pad_token_id);
  OFF(raptor_model_info_t, weight_dtype);
  OFF(raptor_model_info_t, has_pooler);
  OFF(raptor_model_info_t, has_tokenizer);
  OFF(raptor_model_info_t, layer_norm_eps);
  OFF(raptor_model_info_t, head_kind);
  OFF(raptor_model_info_t, num_labels);

  SIZE(raptor_batch_t);
  OFF(raptor_batch_t, struct_size);
  OFF(raptor_batch_t, token_ids);
  OFF(raptor_batch_t, num_tokens);
  OFF(raptor_batch_t, cu_seqlens);
  OFF(raptor_batch_t, num_seqs);
  OFF(raptor_batch_t, token_type_ids);
  OFF(raptor_batch_t, seeds);

  SIZE(raptor_output_t);
  OFF(raptor_output_t, struct_size);
  OFF(raptor_output_t, memory);
  OFF(raptor_output_t, dtype);
  OFF(raptor_output_t, hidden);
  OFF(raptor_output_t, hidden_bytes);
  OFF(raptor_output_t, pooled);
  OFF(raptor_output_t, pooled_bytes);
  OFF(raptor_output_t, pooling);
  OFF(raptor_output_t, normalize);
  OFF(raptor_output_t, logits);
  OFF(raptor_output_t, logits_bytes);

  SIZE(raptor_submit_options_t);
  OFF(raptor_submit_options_t, struct_size);
  OFF(raptor_submit_options_t, priority);
  OFF(raptor_submit_options_t, deadline_us);
  OFF(raptor_submit_options_t, block_timeout_us);

  SIZE(raptor_device_stats_t);
  OFF(raptor_device_stats_t, struct_size);
  OFF(raptor_device_stats_t, index);
  OFF(raptor_device_stats_t, ordinal);
  OFF(raptor_device_stats_t, failed);
  OFF(raptor_device_stats_t, busy_lanes);
  OFF(raptor_device_stats_t, batches);
  OFF(raptor_device_stats_t, requests);
  OFF(raptor_device_stats_t, tokens);
  OFF(raptor_device_stats_t, requeued);
  OFF(raptor_device_stats_t, failed_in_flight);
  OFF(raptor_device_stats_t, outstanding_cost);
  OFF(raptor_device_stats_t, weight_bytes);
  OFF(raptor_device_stats_t, memory_in_use_bytes);
  OFF(raptor_device_stats_t, memory_cached_bytes);
  OFF(raptor_device_stats_t, memory_total_bytes);

  SIZE(raptor_warmup_params_t);
  OFF(raptor_warmup_params_t, struct_size);
  OFF(raptor_warmup_params_t, max_tokens);
  OFF(raptor_warmup_params_t, token_type_ids);
  OFF(raptor_warmup_params_t, seeds);
  OFF(raptor_warmup_params_t, hidden);
  OFF(raptor_warmup_params_t, pooled);
  OFF(raptor_warmup_params_t, pooling);
  OFF(raptor_warmup_params_t, normalize);

  return 0;
}
