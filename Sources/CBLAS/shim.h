#include <cblas.h>
/* OpenBLAS extensions (declared again so the shim compiles if cblas.h points at another BLAS). */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char *openblas_get_corename(void);
