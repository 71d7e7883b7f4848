// The one definition of the Eigen decompositions eigen_instances.hpp declares for every suite.
#define LOLA_TEST_EIGEN_INSTANCES_DEFINE
#include "support/eigen_instances.hpp"

LOLA_TEST_EIGEN_INSTANCES()
