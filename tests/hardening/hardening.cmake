# Hardening tests (issue 9), included by the top-level CMakeLists.txt inside
# its RAPTOR_BUILD_TESTS block: the randomized bad-input ABI fuzzer and a
# short soak (tests/soak/soak.c; run it longer by hand: soak DIR 300).
#   RAPTOR_FUZZ_ABI_ITERATIONS  calls per ctest run (default 100000)
#   RAPTOR_SOAK_SECONDS         soak length under ctest (default 20)
set(RAPTOR_FUZZ_ABI_ITERATIONS 100000 CACHE STRING "fuzz_abi iterations under ctest")
set(RAPTOR_SOAK_SECONDS 20 CACHE STRING "soak seconds under ctest")

add_executable(fuzz_abi tests/hardening/fuzz_abi.c)
set_target_properties(fuzz_abi PROPERTIES C_STANDARD 11 C_STANDARD_REQUIRED ON C_EXTENSIONS ON)
target_link_libraries(fuzz_abi PRIVATE m)
raptor_host_test(fuzz_abi)

add_executable(soak tests/soak/soak.c)
set_target_properties(soak PROPERTIES C_STANDARD 11 C_STANDARD_REQUIRED ON C_EXTENSIONS ON)
raptor_host_test(soak)

add_test(NAME fuzz_abi COMMAND fuzz_abi "${RAPTOR_TESTMODELS_DIR}" ${RAPTOR_FUZZ_ABI_ITERATIONS} 1)
add_test(NAME soak COMMAND soak "${RAPTOR_TESTMODELS_DIR}" ${RAPTOR_SOAK_SECONDS} 8)
set_tests_properties(fuzz_abi soak PROPERTIES FIXTURES_REQUIRED testmodels TIMEOUT 600 ENVIRONMENT "${_san_env}")
