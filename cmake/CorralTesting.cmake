# corral_add_unit_test(NAME SOURCES... LIBS ... [LABELS ...])
# A gtest binary whose tests are registered one by one with ctest (gtest_discover_tests) and
# labelled `unit` unless LABELS says otherwise (e.g. `root` for tests that need namespaces).
include(GoogleTest)
enable_testing()

function(corral_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT CORRAL_TESTS)
    return()
  endif()
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gmock GTest::gtest_main corral_warnings)
  gtest_discover_tests(${name}
    PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
    DISCOVERY_TIMEOUT 60)
endfunction()
