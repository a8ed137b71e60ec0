#pragma once
// The message of the error a call throws, for tests that check what an error says.
#include <gtest/gtest.h>

#include <exception>
#include <string>

namespace glam::testing {

// The message of the `Error` (or subclass) that `call` throws. Fails the test and returns "" when it
// throws nothing or another exception, so a check of the message cannot pass by accident.
template <class Error, class Call>
std::string error_message_of(Call&& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "another error than expected: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no error";
  return "";
}

}  // namespace glam::testing
