#ifndef STAPLEGATE_FUZZ_DRIVER_H
#define STAPLEGATE_FUZZ_DRIVER_H
#include <stddef.h>
#include <stdint.h>

// libFuzzer's driver, for a program with its own main (libclang_rt.fuzzer defines it; only the
// fuzz build, linked with -sanitize=fuzzer, uses this header). SwiftPM renames an executable's
// main, so the fuzz binary keeps its own and hands the command line to libFuzzer here.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
