/* A minimal test harness: CHECK records a failure with its location and goes on; RUN runs one test. */
#ifndef SLUICE_CHECK_H
#define SLUICE_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double check_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int check_failures;
static int check_tests;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "  FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond);            \
            check_failures++;                                                              \
        }                                                                                  \
    } while (0)

/* Checks a status code, printing the handle's message when it differs. */
#define CHECK_RC(c, rc, want)                                                              \
    do {                                                                                   \
        int rc_ = (rc);                                                                    \
        if (rc_ != (want)) {                                                               \
            fprintf(stderr, "  FAILED %s:%d: %s = %s, want %s (%s)\n", __FILE__, __LINE__, \
                    #rc, sluice_strerror(rc_), sluice_strerror(want), sluice_errstr(c));   \
            check_failures++;                                                              \
        }                                                                                  \
    } while (0)

#define RUN(fn)                                                                            \
    do {                                                                                   \
        int before_ = check_failures;                                                      \
        double t_ = check_seconds();                                                       \
        check_tests++;                                                                     \
        fn();                                                                              \
        fprintf(stderr, "%s %s (%.1f s)\n", check_failures == before_ ? "ok  " : "FAIL", #fn, \
                check_seconds() - t_);                                                     \
    } while (0)

#define CHECK_DONE()                                                                       \
    do {                                                                                   \
        fprintf(stderr, "%d tests, %d failed checks\n", check_tests, check_failures);      \
        return check_failures == 0 ? 0 : 1;                                                \
    } while (0)

#endif
