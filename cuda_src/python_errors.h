// The Python side of the two extension modules' kernel resolvers (jaxkeops_ext.cc and
// jaxkeops_cuda.cc): a Python exception as one line for an XLA FFI error message.
#ifndef JAXKEOPS_PYTHON_ERRORS_H
#define JAXKEOPS_PYTHON_ERRORS_H

#include <string>

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

namespace jk_python {

// "KernelCompileError: <message>", without the Python traceback that what() appends.
// Must run with the GIL held.
inline std::string DescribePythonError(const nanobind::python_error& error) {
  std::string name = nanobind::cast<std::string>(error.type().attr("__name__"));
  return name + ": " + nanobind::cast<std::string>(nanobind::str(error.value()));
}

}  // namespace jk_python

#endif  // JAXKEOPS_PYTHON_ERRORS_H
