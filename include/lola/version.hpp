#pragma once
/// @file
/// lola's version; CMakeLists.txt reads these three lines.

#define LOLA_VERSION_MAJOR 0
#define LOLA_VERSION_MINOR 1
#define LOLA_VERSION_PATCH 0

namespace lola {
/// The version as "major.minor.patch".
inline constexpr const char* version_string = "0.1.0";
}  // namespace lola
