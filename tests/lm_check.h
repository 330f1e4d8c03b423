/* lm_check.h: the smallest test harness: CHECK(cond, fmt, ...) counts and prints failures with
 * file and line, and CHECK_DONE() prints "N passed, M failed" and gives main's exit status. */
#ifndef LM_TESTS_CHECK_H
#define LM_TESTS_CHECK_H

#include <stdio.h>

static int lm_check_passes, lm_check_failures;

#define CHECK(c, ...)                                                                                        \
    do {                                                                                                     \
        if (c) {                                                                                             \
            lm_check_passes++;                                                                               \
        } else {                                                                                             \
            lm_check_failures++;                                                                             \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                      \
            printf(__VA_ARGS__);                                                                             \
            printf("\n");                                                                                    \
        }                                                                                                    \
    } while (0)

#define CHECK_DONE()                                                                                         \
    (printf("%d passed, %d failed\n", lm_check_passes, lm_check_failures), lm_check_failures != 0)

#endif
