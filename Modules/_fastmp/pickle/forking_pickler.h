/* forking_pickler.h - the reused ForkingPickler (forking_pickler.c), for
 * the C files that
 * send pickled messages. */
#ifndef FASTMP_FORKING_PICKLER_H
#define FASTMP_FORKING_PICKLER_H

#include "core/state.h"

/* Pickle obj as fastmp.reduction.ForkingPickler.dumps() would (its
 * reducers over copyreg's, the default protocol).  Returns a new reference
 * to one bytes-like object, or to a list of them whose concatenation is
 * the pickle (a large payload stays the caller's own object); NULL with an
 * exception set. */
PyObject *fastmp_pickle(fastmp_state *st, PyObject *obj);

/* The same pickle as one bytes-like object (ForkingPickler.dumps(obj)).
 * Returns a new reference, or NULL with an exception set. */
PyObject *fastmp_pickle_joined(fastmp_state *st, PyObject *obj);

/* ForkingPickler.loads (a borrowed reference), or NULL with an exception
 * set if fastmp.reduction cannot be loaded. */
PyObject *fastmp_unpickler(fastmp_state *st);

#endif /* FASTMP_FORKING_PICKLER_H */
