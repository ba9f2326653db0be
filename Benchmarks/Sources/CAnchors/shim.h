// Same OpenCL API level as the main package's COpenCL target.
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
// Debian's libclblast-dev: CLBlastSgemm and CLBlastSconvgemm on our own cl_mem buffers.
#include <clblast_c.h>
// Debian's libopenblas-dev: cblas_sgemm.
#include <cblas.h>
