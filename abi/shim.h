/* Internal to abi/: the C side of the Go exports. Not installed.
 *
 * The public functions (include/raptor.h) are defined in shim.c with exactly
 * the header's prototypes, so the compiler checks them against the header.
 * Each forwards to a hidden Go export named raptorgo_*, passing handles,
 * function pointers and user_data as uintptr_t: Go never holds a value a
 * host passed as a Go pointer, and never dereferences a handle. */
#ifndef RAPTOR_ABI_SHIM_H
#define RAPTOR_ABI_SHIM_H

#include <stddef.h>
#include <stdint.h>

#include "raptor.h"

#define RAPTORC_HIDDEN __attribute__((visibility("hidden")))

/* The thread-local last error. n bytes of msg are copied (truncated to the
 * buffer); the caller ends them on a UTF-8 boundary. */
RAPTORC_HIDDEN void raptorc_set_error(const char* msg, size_t n);

/* Nonzero while the calling thread runs a completion callback (or a log
 * callback), so that functions forbidden there can refuse instead of
 * deadlocking. */
RAPTORC_HIDDEN int raptorc_in_completion(void);
RAPTORC_HIDDEN int raptorc_in_log(void);

/* Trampolines: call a host callback given as uintptr_t. */
RAPTORC_HIDDEN void raptorc_call_completion(uintptr_t fn, uintptr_t req, raptor_status_t status, uintptr_t user_data);
RAPTORC_HIDDEN void raptorc_call_log(uintptr_t fn, int32_t level, const char* msg, uintptr_t user_data);

#endif
