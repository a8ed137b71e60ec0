// The trainer's checks between steps: a loss that is not finite ends the run (training diverged),
// naming the step, the loss's parts and the model file's loss weights.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "train/trainer.h"

namespace glam::exec {
namespace {

TEST(TrainerChecks, ANonFiniteLossEndsTheRun) {
  ModelConfig m = load_model("glam-tiny-8e");
  m.z_loss_weight = 5;
  StepLoss loss;
  loss.total = 3.5, loss.ce = 3.4;
  EXPECT_NO_THROW(check_loss_finite(4, loss, m));
  for (double bad : {std::numeric_limits<double>::infinity(), std::nan("")}) {
    loss.total = bad;
    try {
      check_loss_finite(4, loss, m);
      ADD_FAILURE() << bad << " accepted";
    } catch (const TrainingDiverged& e) {
      const std::string what = e.what();
      EXPECT_EQ(what.rfind("step 4: the loss is ", 0), 0u) << what;
      EXPECT_NE(what.find("nothing was saved or recorded"), std::string::npos) << what;
      EXPECT_NE(what.find("training.z_loss_weight = 5"), std::string::npos) << what;
    }
  }
}

}  // namespace
}  // namespace glam::exec
