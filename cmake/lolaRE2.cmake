# Finds RE2, the linear-time regular-expression engine behind PEFT's pattern keys
# (include/lola/io/pattern.hpp), as the imported target re2::re2, and sets LOLA_RE2_FOUND.
# Included by lola's CMakeLists.txt and by the installed lolaConfig.cmake, so lola and its
# consumers find it the same way: RE2's own CMake package where it has one (RE2 from 2023 on),
# else the header and the library directly (Debian 12's libre2-dev ships only re2.pc).
set(LOLA_RE2_FOUND FALSE)
if(NOT TARGET re2::re2)
  find_package(re2 CONFIG QUIET)
endif()
if(NOT TARGET re2::re2)
  find_path(LOLA_RE2_INCLUDE_DIR re2/re2.h)
  find_library(LOLA_RE2_LIBRARY re2)
  mark_as_advanced(LOLA_RE2_INCLUDE_DIR LOLA_RE2_LIBRARY)
  if(LOLA_RE2_INCLUDE_DIR AND LOLA_RE2_LIBRARY)
    find_package(Threads QUIET)
    add_library(re2::re2 UNKNOWN IMPORTED)
    set_target_properties(re2::re2 PROPERTIES
      IMPORTED_LOCATION "${LOLA_RE2_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${LOLA_RE2_INCLUDE_DIR}")
    if(TARGET Threads::Threads)  # RE2 locks its DFA caches
      set_property(TARGET re2::re2 PROPERTY INTERFACE_LINK_LIBRARIES Threads::Threads)
    endif()
  endif()
endif()
if(TARGET re2::re2)
  set(LOLA_RE2_FOUND TRUE)
endif()
