#include "sluice.h"
unsigned sluice_version_number(void) {
    return SLUICE_VERSION_MAJOR * 10000 + SLUICE_VERSION_MINOR * 100 + SLUICE_VERSION_PATCH;
}
