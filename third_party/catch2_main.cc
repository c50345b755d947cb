// The Catch2 test runner shared by every unit test binary.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
