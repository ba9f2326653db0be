// Debian's libopenblas-dev installs cblas.h (with openblas_set_num_threads) here.
#include <cblas.h>
