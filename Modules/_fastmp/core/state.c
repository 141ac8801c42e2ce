/* state.c - the per-module state from a type (see state.h). */
#include "core/state.h"

fastmp_state *
fastmp_state_from_type(PyTypeObject *tp)
{
    PyObject *module = PyType_GetModuleByDef(tp, &fastmp_module_def);
    if (module == NULL) {
        return NULL;
    }
    return (fastmp_state *)PyModule_GetState(module);
}
