#pragma once
// Explicit instantiation declarations of the Eigen decompositions that nearly every suite
// instantiates (through low_rank_svd, canonical forms, O-Align and the dense references of the
// tests), for float and double: force-included into each suite (tests/CMakeLists.txt), with their
// one definition in eigen_instances.cpp, compiled once into lola_test_main. Each suite then compiles
// only the members it inlines, not BDCSVD's divide-and-conquer or Jacobi's sweeps: the test
// build's cold time is dominated by these instantiations (tests/backend/test_seam.cpp compiles in
// 119 s instead of 224 s at -O1). A build setting only; nothing the tests check depends on it.

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <Eigen/SVD>

#define LOLA_TEST_EIGEN_INSTANCES(prefix)                                                       \
  prefix template class Eigen::BDCSVD<Eigen::MatrixXd>;                                          \
  prefix template class Eigen::BDCSVD<Eigen::MatrixXf>;                                          \
  prefix template class Eigen::JacobiSVD<Eigen::MatrixXd, Eigen::ColPivHouseholderQRPreconditioner>; \
  prefix template class Eigen::JacobiSVD<Eigen::MatrixXf, Eigen::ColPivHouseholderQRPreconditioner>; \
  prefix template class Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>;                          \
  prefix template class Eigen::SelfAdjointEigenSolver<Eigen::MatrixXf>;                          \
  prefix template class Eigen::HouseholderQR<Eigen::MatrixXd>;                                   \
  prefix template class Eigen::HouseholderQR<Eigen::MatrixXf>;                                   \
  prefix template class Eigen::ColPivHouseholderQR<Eigen::MatrixXd>;                             \
  prefix template class Eigen::ColPivHouseholderQR<Eigen::MatrixXf>;

#ifndef LOLA_TEST_EIGEN_INSTANCES_DEFINE
LOLA_TEST_EIGEN_INSTANCES(extern)
#endif
