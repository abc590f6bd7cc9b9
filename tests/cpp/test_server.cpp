// A C++17 server-style host of libraptor: N model-instance threads (one
// model instance each) submit mixed-length requests concurrently, with
// completion by callback (half of those freeing their request inside the
// callback), by wait and by poll, a few cancels, random priorities and
// deadlines (some too tight to meet), BUSY back-pressure from a small queue
// (retried, or waited out with block_timeout_us), through raptor_submit and
// raptor_submit_with_options. The scheduler merges the requests into shared
// batches; every completion is checked bit for bit against the
// single-request raptor_encode result computed first, exactly once, and with
// a status the request may have (CANCELLED only if cancelled,
// DEADLINE_EXCEEDED only with a deadline).
// Afterwards the engine statistics must show handles, requests and
// goroutines back at their starting level, and the Go heap within a bound.
//
// Usage: test_server MODEL_DIR [REQUESTS] [THREADS]   (defaults 10000, 16;
// the full form is 100000 16)
//
// RAPTOR_TEST_BACKEND=cuda: the engine runs on the GPU (MODEL_DIR then holds
// models the CUDA backend runs: `go run ./tests/tools/mkmodel -gpu`), and
// results equal the single-request references within rounding (relative L2
// error <= 2e-2 per output, as the header allows on the GPU) instead of bit
// for bit.
//
// The heap bound: the Go heap in use (live objects plus garbage the
// collector has not yet swept) at the end may exceed its starting level by
// at most 64 MiB plus the starting level itself (Go's GC lets garbage grow
// to about the live heap before collecting, GOGC=100). A leak of the
// requests' buffers would exceed it: the test allocates well over 1 GiB of
// outputs in total.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "raptor.h"

namespace {

std::atomic<int> failures{0};
bool on_gpu = false;

#define CHECK(cond)                                                                                        \
  do {                                                                                                     \
    if (!(cond)) {                                                                                         \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, #cond,         \
                   raptor_last_error());                                                                   \
      failures++;                                                                                          \
    }                                                                                                      \
  } while (0)

#define REQUIRE_OK(call)                                                                                   \
  do {                                                                                                     \
    raptor_status_t st_ = (call);                                                                          \
    if (st_ != RAPTOR_OK) {                                                                                \
      std::fprintf(stderr, "%s:%d: %s = %s: %s\n", __FILE__, __LINE__, #call, raptor_status_name(st_),     \
                   raptor_last_error());                                                                   \
      std::exit(1);                                                                                        \
    }                                                                                                      \
  } while (0)

uint16_t f32_to_f16(float f) {  // round to nearest even, independent of the library
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;
  if (a >= 0x477ff000u) return sign | 0x7c00u;
  if (a < 0x38800000u) {
    float af;
    std::memcpy(&af, &a, 4);
    return sign | static_cast<uint16_t>(std::nearbyint(af * 16777216.0f));
  }
  a += 0xc8000fffu + ((a >> 13) & 1u);
  return sign | static_cast<uint16_t>(a >> 13);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(man), -24);
  } else if (exp == 31) {
    v = man ? NAN : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(man | 0x400u), static_cast<int>(exp) - 25);
  }
  uint32_t x;
  std::memcpy(&x, &v, 4);
  x |= sign;
  std::memcpy(&v, &x, 4);
  return v;
}

// same_output compares an output buffer with its reference: bit for bit on
// the CPU, within relative L2 error 2e-2 on the GPU.
bool same_output(const std::vector<unsigned char>& got, const std::vector<unsigned char>& want, bool fp16) {
  if (!on_gpu) return got == want;
  if (got.size() != want.size()) return false;
  double num = 0, den = 0;
  size_t n = fp16 ? got.size() / 2 : got.size() / 4;
  for (size_t i = 0; i < n; i++) {
    double g, w;
    if (fp16) {
      uint16_t a, b;
      std::memcpy(&a, &got[2 * i], 2);
      std::memcpy(&b, &want[2 * i], 2);
      g = f16_to_f32(a), w = f16_to_f32(b);
    } else {
      float a, b;
      std::memcpy(&a, &got[4 * i], 4);
      std::memcpy(&b, &want[4 * i], 4);
      g = a, w = b;
    }
    num += (g - w) * (g - w);
    den += w * w;
  }
  return num <= 4e-4 * (den > 1e-30 ? den : 1e-30);
}

enum Mode { kCallback, kCallbackFreeInside, kWait, kPoll };

struct Request {
  int kind = 0;  // 0 = BERT, 1 = BigBird (block-sparse)
  std::vector<int32_t> ids, cu, types;
  std::vector<uint64_t> seeds;
  bool hidden = false, pooled = false, fp16 = false, cancel = false;
  int64_t deadline_us = 0;  // 0 = none
  int32_t priority = 0;
  bool blocking = false;    // block_timeout_us = -1 instead of retrying BUSY
  bool expired_at_submit = false;
  int32_t pooling = RAPTOR_POOLING_MEAN, normalize = 0;
  Mode mode = kWait;
  std::vector<unsigned char> want_hidden, want_pooled;  // expected bytes, in the request's dtype
  std::vector<unsigned char> got_hidden, got_pooled;    // the request's output buffers
  raptor_request_t* handle = nullptr;
  std::atomic<int> callbacks{0};
  std::atomic<int> cb_status{-1};
  std::atomic<int> cb_wrong_handle{0};
  raptor_status_t result = -1;

  raptor_batch_t batch() const {
    raptor_batch_t b;
    raptor_batch_default(&b);
    b.token_ids = ids.data();
    b.num_tokens = ids.size();
    b.cu_seqlens = cu.data();
    b.num_seqs = cu.size() - 1;
    b.token_type_ids = types.empty() ? nullptr : types.data();
    b.seeds = seeds.empty() ? nullptr : seeds.data();
    return b;
  }
  raptor_output_t output(std::vector<unsigned char>& h, std::vector<unsigned char>& p, bool half) const {
    raptor_output_t o;
    raptor_output_default(&o);
    o.dtype = half ? RAPTOR_DTYPE_FP16 : RAPTOR_DTYPE_FP32;
    o.pooling = pooling;
    o.normalize = normalize;
    if (hidden) o.hidden = h.data(), o.hidden_bytes = h.size();
    if (pooled) o.pooled = p.data(), o.pooled_bytes = p.size();
    return o;
  }
};

struct Model {
  const char* file;
  int vocab, max_len, type_vocab;
};
const Model kModels[2] = {{"tiny-bert.raptor", 79, 128, 2}, {"tiny-bigbird.raptor", 100, 256, 1}};
constexpr int kHidden = 32;

void make_request(Request& r, int kind, std::mt19937_64& rng) {
  const Model& m = kModels[kind];
  r.kind = kind;
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  int nseq = uni(1, 4);
  r.cu.push_back(0);
  for (int s = 0; s < nseq; s++) {
    int pick = uni(0, 99), len;
    if (pick < 80)
      len = uni(1, 16);
    else if (pick < 97)
      len = uni(17, 64);
    else
      len = uni(65, m.max_len);  // BigBird: past 56 tokens, block-sparse
    r.cu.push_back(r.cu.back() + len);
  }
  for (int t = 0; t < r.cu.back(); t++) r.ids.push_back(uni(0, m.vocab - 1));
  if (uni(0, 3) == 0) {
    for (int t = 0; t < r.cu.back(); t++) r.types.push_back(uni(0, m.type_vocab - 1));
  }
  if (uni(0, 1) == 0) {
    for (int s = 0; s < nseq; s++) r.seeds.push_back(rng());
  }
  switch (uni(0, 3)) {
    case 0: r.hidden = true; break;
    case 1: r.pooled = true; break;
    default: r.hidden = r.pooled = true;
  }
  r.fp16 = uni(0, 4) == 0;
  r.pooling = uni(0, 1) ? RAPTOR_POOLING_MEAN : RAPTOR_POOLING_CLS;
  r.normalize = uni(0, 1);
  r.mode = static_cast<Mode>(uni(0, 3));
  r.cancel = uni(0, 19) == 0;
  switch (uni(0, 9)) {
    case 0: r.deadline_us = uni(1, 3000); break;  // often too tight
    case 1:
    case 2: r.deadline_us = 60000000; break;
    default: break;
  }
  r.priority = uni(0, 2);
  r.blocking = uni(0, 1) == 1;
}

void on_done(raptor_request_t* req, raptor_status_t status, void* user_data) {
  auto* r = static_cast<Request*>(user_data);
  if (r->mode == kCallbackFreeInside) {
    raptor_request_free(req);  // inside the callback; the owner never touches the handle
  } else if (req != r->handle && r->handle != nullptr) {
    r->cb_wrong_handle++;
  }
  r->cb_status.store(status);
  r->callbacks.fetch_add(1);  // last: the owner may proceed once it sees this
}

raptor_engine_stats_t stats(raptor_engine_t* e) {
  raptor_engine_stats_t s;
  std::memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  REQUIRE_OK(raptor_engine_get_stats(e, &s));
  return s;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::vector<unsigned char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

}  // namespace

int main(int argc, char** argv) {
  const char* dir = argc > 1 ? argv[1] : std::getenv("RAPTOR_TESTMODELS");
  if (!dir) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [REQUESTS] [THREADS]\n", argv[0]);
    return 2;
  }
  const int n_requests = argc > 2 ? std::atoi(argv[2]) : 10000;
  const int n_threads = argc > 3 ? std::atoi(argv[3]) : 16;
  raptor_set_log_callback(nullptr, RAPTOR_LOG_WARN, nullptr);

  raptor_engine_options_t opts;
  raptor_engine_options_default(&opts);
  const char* be = std::getenv("RAPTOR_TEST_BACKEND");
  on_gpu = be != nullptr && std::strcmp(be, "cuda") == 0;
  opts.backend = on_gpu ? RAPTOR_BACKEND_CUDA : RAPTOR_BACKEND_CPU;
  opts.queue_capacity = 64;  // small, so that the threads see BUSY and retry
  raptor_engine_t* engine = nullptr;
  REQUIRE_OK(raptor_engine_create(&opts, &engine));

  // One reference model per kind, one model instance per thread (even
  // threads BERT, odd threads BigBird; half loaded from memory).
  std::string paths[2] = {std::string(dir) + "/" + kModels[0].file, std::string(dir) + "/" + kModels[1].file};
  raptor_model_t* ref_models[2];
  for (int k = 0; k < 2; k++) REQUIRE_OK(raptor_model_load(engine, paths[k].c_str(), &ref_models[k]));
  std::vector<raptor_model_t*> instances(n_threads);
  for (int t = 0; t < n_threads; t++) {
    const std::string& p = paths[t % 2];
    if (t % 4 < 2) {
      REQUIRE_OK(raptor_model_load(engine, p.c_str(), &instances[t]));
    } else {
      std::vector<unsigned char> image = read_file(p);
      REQUIRE_OK(raptor_model_load_from_memory(engine, image.data(), image.size(), &instances[t]));
    }
  }

  // The requests, and their single-request results from raptor_encode.
  double t0 = now_s();
  std::vector<std::unique_ptr<Request>> reqs(n_requests);
  std::mt19937_64 rng(42);
  size_t total_tokens = 0;
  for (int i = 0; i < n_requests; i++) {
    reqs[i] = std::make_unique<Request>();
    make_request(*reqs[i], (i % n_threads) % 2, rng);
    total_tokens += reqs[i]->ids.size();
  }
  std::vector<std::thread> pool;
  for (int w = 0; w < n_threads; w++) {
    pool.emplace_back([&, w] {
      for (int i = w; i < n_requests; i += n_threads) {
        Request& r = *reqs[i];
        size_t T = r.ids.size(), S = r.cu.size() - 1;
        std::vector<unsigned char> h(r.hidden ? T * kHidden * 4 : 0), p(r.pooled ? S * kHidden * 4 : 0);
        raptor_batch_t b = r.batch();
        raptor_output_t o = r.output(h, p, false);
        REQUIRE_OK(raptor_encode(ref_models[r.kind], &b, &o));
        auto convert = [&](const std::vector<unsigned char>& f32) {
          if (!r.fp16) return f32;
          std::vector<unsigned char> out(f32.size() / 2);
          for (size_t j = 0; j < f32.size() / 4; j++) {
            float v;
            std::memcpy(&v, &f32[4 * j], 4);
            uint16_t x = f32_to_f16(v);
            std::memcpy(&out[2 * j], &x, 2);
          }
          return out;
        };
        r.want_hidden = convert(h);
        r.want_pooled = convert(p);
        r.got_hidden.assign(r.want_hidden.size(), 0xEE);
        r.got_pooled.assign(r.want_pooled.size(), 0xEE);
      }
    });
  }
  for (auto& th : pool) th.join();
  pool.clear();
  double t_ref = now_s() - t0;

  raptor_engine_stats_t start = stats(engine);
  std::fprintf(stderr, "start: %d requests (%zu tokens), references in %.2fs; handles %lld, goroutines %lld, heap %.1f MiB\n",
               n_requests, total_tokens, t_ref, (long long)start.process_handles,
               (long long)start.process_goroutines, start.process_heap_bytes / 1048576.0);

  // The stress: each thread serves its model instance with a window of
  // outstanding requests.
  std::atomic<long> busy{0}, cancelled{0}, completed{0}, expired{0}, expired_at_submit{0};
  t0 = now_s();
  for (int w = 0; w < n_threads; w++) {
    pool.emplace_back([&, w] {
      const int window = 8;
      std::vector<Request*> mine;
      for (int i = w; i < n_requests; i += n_threads) mine.push_back(reqs[i].get());
      for (size_t base = 0; base < mine.size(); base += window) {
        size_t end = std::min(mine.size(), base + window);
        for (size_t j = base; j < end; j++) {
          Request& r = *mine[j];
          raptor_batch_t b = r.batch();
          raptor_output_t o = r.output(r.got_hidden, r.got_pooled, r.fp16);
          bool cb = r.mode == kCallback || r.mode == kCallbackFreeInside;
          raptor_request_t* h = nullptr;
          raptor_submit_options_t so;
          raptor_submit_options_default(&so);
          so.priority = r.priority;
          so.deadline_us = r.deadline_us;
          so.block_timeout_us = r.blocking ? -1 : 0;
          const bool plain = r.priority == 0 && r.deadline_us == 0 && !r.blocking;
          for (;;) {
            raptor_status_t st = plain ? raptor_submit(instances[w], &b, &o, cb ? on_done : nullptr, &r, &h)
                                       : raptor_submit_with_options(instances[w], &b, &o, &so, cb ? on_done : nullptr,
                                                                    &r, &h);
            if (st == RAPTOR_OK) break;
            if (st == RAPTOR_ERR_DEADLINE_EXCEEDED && r.deadline_us > 0) {  // passed before it was queued
              r.expired_at_submit = true;
              break;
            }
            if (st != RAPTOR_ERR_BUSY || r.blocking || std::strlen(raptor_last_error()) == 0) {
              std::fprintf(stderr, "submit: %s: %s\n", raptor_status_name(st), raptor_last_error());
              std::exit(1);
            }
            busy++;
            std::this_thread::sleep_for(std::chrono::microseconds(200));
          }
          if (r.expired_at_submit) {
            expired_at_submit++;
            continue;
          }
          if (r.mode != kCallbackFreeInside) r.handle = h;  // else h may already be freed
          if (r.cancel && r.mode != kCallbackFreeInside) CHECK(raptor_request_cancel(h) == RAPTOR_OK);
        }
        for (size_t j = base; j < end; j++) {
          Request& r = *mine[j];
          if (r.expired_at_submit) {
            expired++;
            continue;
          }
          switch (r.mode) {
            case kCallback:
            case kCallbackFreeInside: {
              double deadline = now_s() + 60;
              while (r.callbacks.load() == 0 && now_s() < deadline) std::this_thread::yield();
              r.result = r.cb_status.load();
              if (r.mode == kCallback) {
                raptor_status_t res = -1;
                CHECK(raptor_request_wait(r.handle, 0, &res) == RAPTOR_OK && res == r.result);
              }
              break;
            }
            case kWait:
              CHECK(raptor_request_wait(r.handle, -1, &r.result) == RAPTOR_OK);
              break;
            case kPoll: {
              int32_t done = 0;
              double deadline = now_s() + 60;
              while (!done && now_s() < deadline) {
                CHECK(raptor_request_poll(r.handle, &done, &r.result) == RAPTOR_OK);
                if (!done) std::this_thread::yield();
              }
              CHECK(done == 1);
              break;
            }
          }
          if (r.result == RAPTOR_OK) {
            completed++;
            if (!same_output(r.got_hidden, r.want_hidden, r.fp16) || !same_output(r.got_pooled, r.want_pooled, r.fp16)) {
              std::fprintf(stderr, "request %p (kind %d, %zu tokens, fp16 %d): output differs from raptor_encode\n",
                           static_cast<void*>(&r), r.kind, r.ids.size(), r.fp16);
              failures++;
            }
          } else if (r.result == RAPTOR_ERR_CANCELLED && r.cancel) {
            cancelled++;
            if (r.mode != kCallbackFreeInside) CHECK(std::strlen(raptor_request_error(r.handle)) > 0);
          } else if (r.result == RAPTOR_ERR_DEADLINE_EXCEEDED && r.deadline_us > 0) {
            expired++;
            if (r.mode != kCallbackFreeInside) CHECK(std::strstr(raptor_request_error(r.handle), "deadline") != nullptr);
          } else {
            std::fprintf(stderr, "request completed with %s\n", raptor_status_name(r.result));
            failures++;
          }
          if (r.mode != kCallbackFreeInside) raptor_request_free(r.handle);
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  double t_run = now_s() - t0;

  // Exactly once: wait a moment for any duplicate callback to show up.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  for (auto& r : reqs) {
    bool cb = (r->mode == kCallback || r->mode == kCallbackFreeInside) && !r->expired_at_submit;
    CHECK(r->callbacks.load() == (cb ? 1 : 0));
    CHECK(r->cb_wrong_handle.load() == 0);
  }

  // Back to the starting level: requests, handles, queue, goroutines (after
  // a settle loop: goroutines that delivered callbacks of cancelled
  // requests may still be exiting), heap within the documented bound.
  raptor_engine_stats_t end = stats(engine);
  for (int i = 0; i < 200 && end.process_goroutines != start.process_goroutines; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    end = stats(engine);
  }
  std::fprintf(stderr,
               "end:   %.2fs (%.0f requests/s), %ld completed, %ld cancelled, %ld deadline exceeded (%ld at submit), "
               "%ld BUSY retries; %.2f requests per batch; handles %lld, "
               "goroutines %lld, heap %.1f MiB, live requests %lld, queue %lld\n",
               t_run, n_requests / t_run, completed.load(), cancelled.load(), expired.load(), expired_at_submit.load(),
               busy.load(), end.mean_batch_requests,
               (long long)end.process_handles, (long long)end.process_goroutines, end.process_heap_bytes / 1048576.0,
               (long long)end.live_requests, (long long)end.queue_depth);
  CHECK(completed.load() + cancelled.load() + expired.load() == n_requests);
  CHECK(end.requests_submitted - start.requests_submitted ==
        static_cast<uint64_t>(n_requests - expired_at_submit.load()));
  CHECK(end.requests_completed - start.requests_completed == static_cast<uint64_t>(completed.load()));
  CHECK(end.requests_cancelled - start.requests_cancelled == static_cast<uint64_t>(cancelled.load()));
  CHECK(end.requests_failed - start.requests_failed ==
        static_cast<uint64_t>(expired.load() - expired_at_submit.load()));
  CHECK(end.completed_by_status[RAPTOR_ERR_DEADLINE_EXCEEDED] - start.completed_by_status[RAPTOR_ERR_DEADLINE_EXCEEDED] ==
        static_cast<uint64_t>(expired.load() - expired_at_submit.load()));
  // Packing adds no padding; on the GPU, batches of up to 4096 tokens (the default) run padded to a
  // CUDA graph token-count class (at most 12.5% more tokens above 64; more below).
  if (on_gpu) {
    // (this test's requests are mostly 1-16 tokens, and a batch under 64 tokens pads to 64)
    CHECK(end.padding_ratio >= 0.0 && end.padding_ratio < 1.0 && end.scheduler_requests > 0);
    std::fprintf(stderr, "padding ratio (CUDA graph classes): %.4f\n", end.padding_ratio);
  } else {
    CHECK(end.padding_ratio == 0.0 && end.scheduler_requests > 0);
  }
  CHECK(end.live_requests == 0 && end.queue_depth == 0);
  CHECK(end.live_models == start.live_models);
  CHECK(end.process_handles == start.process_handles);
  CHECK(end.process_goroutines == start.process_goroutines);
  const int64_t heap_bound = 2 * start.process_heap_bytes + (64ll << 20);
  CHECK(end.process_heap_bytes <= heap_bound);

  // Free everything; a fresh engine then is the only live handle.
  for (auto* m : instances) raptor_model_free(m);
  raptor_engine_free(engine);
  raptor_engine_t* probe = nullptr;
  REQUIRE_OK(raptor_engine_create(&opts, &probe));
  raptor_engine_stats_t after = stats(probe);
  CHECK(after.process_handles == 1);
  raptor_engine_free(probe);

  std::fprintf(stderr, "%s\n", failures.load() == 0 ? "PASS" : "FAIL");
  return failures.load() == 0 ? 0 : 1;
}
