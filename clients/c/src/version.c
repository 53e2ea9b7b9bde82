/* The version of the library actually linked, for comparison with the header's macros. */
#include "sluice.h"

unsigned sluice_version_number(void) {
    return SLUICE_VERSION_NUMBER;
}

const char *sluice_version_string(void) {
    return SLUICE_VERSION_STRING;
}
