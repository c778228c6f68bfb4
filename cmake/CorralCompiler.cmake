# Compiler settings shared by every target: warnings, sanitizers, ccache.
find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
  set(CMAKE_C_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
endif()

add_library(corral_warnings INTERFACE)
target_compile_options(corral_warnings INTERFACE -Wall -Wextra -Wpedantic -Wno-missing-field-initializers)
if(CORRAL_WERROR)
  target_compile_options(corral_warnings INTERFACE -Werror)
endif()

if(CORRAL_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
