/* store.h: the feature store's API lives in include/limaml.h (section "store"); this header
 * stays for the files that include "store/store.h". */
#ifndef LM_STORE_H
#define LM_STORE_H
#include "limaml.h"
#endif
