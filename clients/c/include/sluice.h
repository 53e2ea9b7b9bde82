/* libsluice: the C client library for sluiced. The API arrives with the libsluice issue. */
#ifndef SLUICE_H
#define SLUICE_H
#define SLUICE_VERSION_MAJOR 0
#define SLUICE_VERSION_MINOR 1
#define SLUICE_VERSION_PATCH 0
unsigned sluice_version_number(void);
#endif
