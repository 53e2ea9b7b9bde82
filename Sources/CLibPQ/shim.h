// libpq, used only from the writer threads that own each connection (see SluiceStore).
#include <libpq-fe.h>
