# The PyPI ROS 2 wheels bake the include dir of the machine they were built on
# (/opt/python/cp311-cp311/include/python3.11) into their generator_py targets, and CMake refuses to
# generate with a non-existent include path. This module drops include paths that do not exist
# from every imported target of the top directory, once that directory is fully read (a deferred
# call), which is a no-op on a normal ROS install. CMakeLists.txt includes it; the test helper
# that builds upstream composition_interfaces gives it as CMAKE_PROJECT_INCLUDE.
function(cloudseg_drop_missing_include_dirs)
  get_directory_property(imported_targets DIRECTORY "${CMAKE_SOURCE_DIR}" IMPORTED_TARGETS)
  foreach(target IN LISTS imported_targets)
    get_target_property(dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT dirs)
      continue()
    endif()
    set(kept "")
    foreach(dir IN LISTS dirs)
      if(EXISTS "${dir}" OR dir MATCHES "^\\$<")
        list(APPEND kept "${dir}")
      endif()
    endforeach()
    set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${kept}")
  endforeach()
endfunction()

# IMPORTED_TARGETS as a directory property needs CMake 3.21.
if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.21)
  cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL cloudseg_drop_missing_include_dirs)
endif()
