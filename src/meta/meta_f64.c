/* meta_f64.c: the network passes, per-task algorithms and row gathering in double, for
 * finite-difference checks of whole algorithms. Same code as meta_f32.c; see meta/meta.h. */
#include "meta/meta.h"

#include <math.h>
#include <string.h>

#define REAL double
#define LM_NN_FN(name) name##_f64
#define LM_META_FN(name) name##_f64

#include "meta/net_impl.h"
#include "meta/algo_impl.h"
#include "meta/rows_impl.h"
