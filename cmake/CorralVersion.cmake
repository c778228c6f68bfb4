# CORRAL_VERSION_STRING: `git describe` when available, the project version otherwise.
set(CORRAL_VERSION_STRING ${PROJECT_VERSION})
find_package(Git QUIET)
if(GIT_FOUND AND EXISTS ${CMAKE_SOURCE_DIR}/.git)
  execute_process(
    COMMAND ${GIT_EXECUTABLE} describe --tags --always --dirty
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
    OUTPUT_VARIABLE _corral_git_describe
    OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _corral_git_rc)
  if(_corral_git_rc EQUAL 0 AND _corral_git_describe)
    set(CORRAL_VERSION_STRING "${PROJECT_VERSION}+g${_corral_git_describe}")
  endif()
endif()
message(STATUS "Corral version: ${CORRAL_VERSION_STRING}")
