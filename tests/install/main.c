#include <stdio.h>
#include <string.h>

#include "raptor.h"

int main(void) {
  if (raptor_abi_version() != RAPTOR_ABI_VERSION || strlen(raptor_version()) == 0) return 1;
  raptor_engine_options_t opts;
  raptor_engine_options_default(&opts);
  opts.backend = RAPTOR_BACKEND_CPU;
  raptor_set_log_callback(NULL, RAPTOR_LOG_ERROR, NULL);
  raptor_engine_t* e = NULL;
  if (raptor_engine_create(&opts, &e) != RAPTOR_OK) {
    fprintf(stderr, "engine: %s\n", raptor_last_error());
    return 1;
  }
  fprintf(stderr, "raptor %s on %s\n", raptor_version(), raptor_engine_backend(e));
  raptor_engine_free(e);
  return 0;
}
