// This rank's process groups (docs/parallelism.md): rank = dp_rank * tp + tp_rank; the
// expert-parallel groups are runs of ep adjacent ranks and the expert-data-parallel groups
// the ranks with the same position in them. Each group is a Communicator (RAII over an
// MPI communicator). A process without MPI is one rank alone: every group has size 1 and no
// communicator. A run on a device (anything but the CPU) gets, for each group of several ranks, a
// DeviceCommunicator (parallel/device_communicator.h): its device tensors go over the device's
// collectives (NCCL on CUDA, each group's unique id broadcast over its MPI communicator), its
// host tensors over MPI.
#pragma once

#include <mpi.h>

#include <memory>
#include <vector>

#include "models/runtime.h"
#include "parallel/layout.h"

namespace moetron {

class DeviceCommunicator;
class MpiCommunicator;

class ProcessGroups {
 public:
  explicit ProcessGroups(Device device = {});  // one rank alone, no MPI
  // Splits `base` (MPI must be initialised and the layout resolved for its size). A `device`
  // other than the CPU must have a backend here on every rank (an Error names it otherwise).
  explicit ProcessGroups(const Layout& layout, MPI_Comm base = MPI_COMM_WORLD, Device device = {});
  ~ProcessGroups();
  ProcessGroups(const ProcessGroups&) = delete;
  ProcessGroups& operator=(const ProcessGroups&) = delete;

  const Layout& layout() const { return layout_; }
  Device device() const { return device_; }
  int rank() const { return rank_; }
  int dp_rank() const { return rank_ / layout_.tp; }
  int tp_rank() const { return rank_ % layout_.tp; }
  int ep_rank() const { return rank_ % layout_.ep; }
  int edp_rank() const { return rank_ / layout_.ep; }

  // Null for a group of one rank (every group of a process without MPI).
  Communicator* world() const;
  Communicator* dp() const;
  Communicator* tp() const;
  Communicator* ep() const;
  Communicator* edp() const;
  std::vector<Communicator*> all() const;  // world, dp, tp, ep, edp (those of several ranks)

  // What the model and its layers see of this rank: the groups' device, its tp and ep groups,
  // and the GEMMs' dtype.
  Runtime runtime(DType compute = DType::f32) const;
  // The MPI communicator of all ranks (for MPI-IO), or MPI_COMM_NULL without MPI.
  MPI_Comm mpi_world() const;

 private:
  // A group's communicator: the device's over the MPI one where there is one.
  struct Comm {
    std::unique_ptr<MpiCommunicator> mpi;
    std::unique_ptr<DeviceCommunicator> device;
    Communicator* get() const;  // null for a group of one rank
  };
  Comm make(std::unique_ptr<MpiCommunicator> mpi) const;

  Layout layout_;
  Device device_;
  int rank_ = 0;
  Comm world_, dp_, tp_, ep_, edp_;
};

}  // namespace moetron
