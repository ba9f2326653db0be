// Open MPI from Debian's libopenmpi-dev (pkg-config `ompi-c` gives the include folder).
// MPI's handles are macros that Swift does not import (in Open MPI, addresses of globals):
// these functions return them.
#include <mpi.h>

static inline MPI_Comm sigprop_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype sigprop_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype sigprop_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype sigprop_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Op sigprop_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Status *sigprop_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Request sigprop_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline void *sigprop_mpi_in_place(void) { return MPI_IN_PLACE; }
