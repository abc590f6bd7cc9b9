/* test_check.h: the check counters and macros of the C host tests that run
 * threads (test_c_api, test_sched, test_devices). Include after raptor.h; the including
 * file prints the totals and exits nonzero when failures > 0. */
#ifndef RAPTOR_TEST_CHECK_H
#define RAPTOR_TEST_CHECK_H

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_int failures, checks;

#define CHECK(cond)                                                                     \
  do {                                                                                  \
    atomic_fetch_add(&checks, 1);                                                       \
    if (!(cond)) {                                                                      \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, \
              #cond, raptor_last_error());                                              \
      atomic_fetch_add(&failures, 1);                                                   \
    }                                                                                   \
  } while (0)

/* expect checks a call's status; for a failure also that the calling
 * thread's last error is a non-empty message that starts with the
 * function's name (so it is this call's message, not an older one). */
static void expect(raptor_status_t got, raptor_status_t want, const char* fn, const char* call, int line) {
  atomic_fetch_add(&checks, 1);
  if (got != want) {
    fprintf(stderr, "line %d: %s = %s (%d), want %s (last error: %s)\n", line, call, raptor_status_name(got), got,
            raptor_status_name(want), raptor_last_error());
    atomic_fetch_add(&failures, 1);
    return;
  }
  if (want == RAPTOR_OK) return;
  const char* msg = raptor_last_error();
  if (msg == NULL || strncmp(msg, fn, strlen(fn)) != 0 || strlen(msg) <= strlen(fn) + 2) {
    fprintf(stderr, "line %d: %s -> %s but last error is \"%s\", want a message from %s\n", line, call,
            raptor_status_name(got), msg ? msg : "(null)", fn);
    atomic_fetch_add(&failures, 1);
    return;
  }
  if (getenv("RAPTOR_TEST_VERBOSE")) fprintf(stderr, "  ok  %-12s %s\n", raptor_status_name(got), msg);
}
#define EXPECT(want, fn, args) expect(fn args, (want), #fn, #fn #args, __LINE__)

#endif
