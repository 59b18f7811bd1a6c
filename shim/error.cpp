#include "internal.h"

namespace {
thread_local std::string last_error;
}

void mlxb::set_error(const std::string& message) {
  last_error = message;
}

extern "C" const char* mlx_last_error(void) {
  return last_error.c_str();
}
