/* Timing helpers shared by the C host tests. */
#ifndef RAPTOR_TEST_TIME_H
#define RAPTOR_TEST_TIME_H

#include <stdatomic.h>
#include <time.h>

static inline double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* wait_until polls *v >= want for up to ms milliseconds. */
static inline int wait_until(atomic_int* v, int want, int ms) {
  double end = now_s() + ms / 1000.0;
  while (atomic_load(v) < want) {
    if (now_s() > end) return 0;
    sleep_ms(1);
  }
  return 1;
}

#endif
