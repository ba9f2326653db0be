// Foundation on Linux has no gzip; data sets ship as .gz files (Debian's dataset-fashion-mnist).
#include <zlib.h>
