/* module.c - fastmp._fastmp: multi-phase init over the table of parts.
 * Each part (one C file, see core/state.h) adds its own types, functions
 * and constants and owns its fields of the per-module state; the module
 * runs their hooks in the table's order, which is the order of the layers
 * (a part may use what a part above it in the table made). */
#include "core/state.h"

typedef struct {
    const char *name;
    int (*exec)(PyObject *module, fastmp_state *st);
    int (*traverse)(fastmp_state *st, visitproc visit, void *arg);  /* or NULL */
    void (*clear)(fastmp_state *st);                                /* or NULL */
} fastmp_part;

#define PART(name) \
    {#name, fastmp_##name##_exec, fastmp_##name##_traverse, fastmp_##name##_clear}
#define EXEC_ONLY_PART(name) {#name, fastmp_##name##_exec, NULL, NULL}

static const fastmp_part parts[] = {
    PART(exceptions),           /* core/ */
    PART(forking_pickler),      /* pickle/ */
    EXEC_ONLY_PART(quickpickle),
    PART(semlock),              /* synchronize/ */
    PART(condition),
    PART(heap),                 /* shm/ */
    PART(sharedctypes),
    PART(shared_memory),
    PART(channel),              /* queues/ */
    PART(connection),           /* connection/ */
    PART(dispatcher),           /* pool/ */
    EXEC_ONLY_PART(worker),
    PART(method_calls),         /* managers/ */
};
#define NPARTS (sizeof(parts) / sizeof(parts[0]))

static int
fastmp_exec(PyObject *module)
{
    fastmp_state *st = (fastmp_state *)PyModule_GetState(module);
    for (size_t i = 0; i < NPARTS; i++) {
        if (parts[i].exec(module, st) < 0) {
            return -1;
        }
    }
    return 0;
}

static int
fastmp_traverse(PyObject *module, visitproc visit, void *arg)
{
    fastmp_state *st = (fastmp_state *)PyModule_GetState(module);
    if (st == NULL) {
        return 0;
    }
    for (size_t i = 0; i < NPARTS; i++) {
        int r = parts[i].traverse != NULL ? parts[i].traverse(st, visit, arg) : 0;
        if (r != 0) {
            return r;
        }
    }
    return 0;
}

static int
fastmp_clear(PyObject *module)
{
    fastmp_state *st = (fastmp_state *)PyModule_GetState(module);
    if (st == NULL) {
        return 0;
    }
    for (size_t i = 0; i < NPARTS; i++) {
        if (parts[i].clear != NULL) {
            parts[i].clear(st);
        }
    }
    return 0;
}

static void
fastmp_free(void *module)
{
    (void)fastmp_clear((PyObject *)module);
}

static PyModuleDef_Slot fastmp_slots[] = {
    {Py_mod_exec, (void *)fastmp_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

PyModuleDef fastmp_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fastmp._fastmp",
    .m_doc = "C core of fastmp: Connection, SemLock, shared memory, the "
             "Queue channel and the Pool dispatcher.",
    .m_size = sizeof(fastmp_state),
    .m_slots = fastmp_slots,
    .m_traverse = fastmp_traverse,
    .m_clear = fastmp_clear,
    .m_free = fastmp_free,
};

PyMODINIT_FUNC
PyInit__fastmp(void)
{
    return PyModuleDef_Init(&fastmp_module_def);
}
