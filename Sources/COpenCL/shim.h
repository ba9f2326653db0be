// The package targets the OpenCL 1.2 API so it runs on every vendor's driver.
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
