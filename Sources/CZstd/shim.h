// libzstd, for bounded decompression of frame payloads (flags bit 0).
#include <zstd.h>
#include <zstd_errors.h>
