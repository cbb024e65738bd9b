/*
 * Shared main for the Check suites: TAP on stdout (read by automake's
 * tap-driver.sh), Check's own summary on stderr. Each suite file defines
 * `static Suite *make_suite(void)` and ends with SL_UNIT_MAIN.
 */
#ifndef SL_UNIT_H
#define SL_UNIT_H

#include <check.h>
#include <stdlib.h>

#define SL_UNIT_MAIN                                                                               \
    int main(void)                                                                                 \
    {                                                                                              \
        SRunner *runner = srunner_create(make_suite());                                            \
        srunner_set_tap(runner, "-");                                                              \
        srunner_run_all(runner, CK_SILENT);                                                        \
        int failed = srunner_ntests_failed(runner);                                                \
        srunner_free(runner);                                                                      \
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;                                          \
    }

#endif
