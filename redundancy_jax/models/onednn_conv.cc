// The models' 3x3 stride-1 SAME convolution in NHWC / HWIO, float32, by oneDNN: its forward, input gradient
// and weight gradient as XLA FFI handlers (redundancy_jax/models/onednn.py builds and registers them).
//
// oneDNN picks its kernels for the CPU at run time (512-bit ones on AVX-512 CPUs), where XLA:CPU's Eigen
// convolutions are compiled for 256-bit vectors. Activations stay in XLA's NHWC layout (oneDNN's jit kernels
// read it directly); the kernel is reordered between XLA's HWIO and the blocked layout oneDNN's primitive
// asks for, on every call (a few thousand to a few million floats against N H W C O 9 multiply-adds).
// Primitives are built once per shape and kept.
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

enum Part { kForward = 0, kInputGradient = 1, kWeightGradient = 2 };

struct Plan {
  dnnl::primitive conv;
  memory::desc weights;    // the layout the primitive reads or writes the kernel in
  dnnl::reorder to_plain;  // for the weight gradient: blocked -> HWIO
  dnnl::reorder to_blocked;  // for forward and input gradient: HWIO -> blocked
  bool reorder = false;
};

using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t>;

// Called under `Run`'s lock only.
Plan& PlanFor(Part part, int64_t n, int64_t h, int64_t w, int64_t c, int64_t o) {
  static std::map<Key, std::unique_ptr<Plan>> plans;
  Key key{part, n, h, w, c, o};
  auto found = plans.find(key);
  if (found != plans.end()) return *found->second;

  auto& engine = Engine();
  const auto f32 = memory::data_type::f32;
  memory::desc x_plain({n, c, h, w}, f32, tag::nhwc);
  memory::desc y_plain({n, o, h, w}, f32, tag::nhwc);
  memory::desc w_plain({o, c, 3, 3}, f32, tag::hwio);
  memory::desc w_any({o, c, 3, 3}, f32, tag::any);
  memory::dims strides{1, 1}, padding{1, 1};
  auto forward_desc = dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                                                      x_plain, w_any, y_plain, strides, padding, padding);
  auto forward_pd = dnnl::convolution_forward::primitive_desc(forward_desc, engine);
  auto plan = std::make_unique<Plan>();
  if (part == kForward) {
    plan->conv = dnnl::convolution_forward(forward_pd);
    plan->weights = forward_pd.weights_desc();
  } else if (part == kInputGradient) {
    auto desc = dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct, x_plain, w_any, y_plain, strides,
                                                      padding, padding);
    auto pd = dnnl::convolution_backward_data::primitive_desc(desc, engine, forward_pd);
    plan->conv = dnnl::convolution_backward_data(pd);
    plan->weights = pd.weights_desc();
  } else {
    auto desc = dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, x_plain, w_any, y_plain, strides,
                                                         padding, padding);
    auto pd = dnnl::convolution_backward_weights::primitive_desc(desc, engine, forward_pd);
    plan->conv = dnnl::convolution_backward_weights(pd);
    plan->weights = pd.diff_weights_desc();
  }
  plan->reorder = plan->weights != w_plain;
  if (plan->reorder) {
    if (part == kWeightGradient) {
      plan->to_plain = dnnl::reorder(dnnl::reorder::primitive_desc(engine, plan->weights, engine, w_plain));
    } else {
      plan->to_blocked = dnnl::reorder(dnnl::reorder::primitive_desc(engine, w_plain, engine, plan->weights));
    }
  }
  return *plans.emplace(key, std::move(plan)).first->second;
}

// x, y: (N, H, W, C) and (N, H, W, O); kernel: (3, 3, C, O).
// One convolution at a time: XLA runs independent operations of a step on several threads at once, and two
// oneDNN calls would each start a team of OpenMP threads as large as the machine, on the same cores.
ffi::Error Run(Part part, float* x, float* kernel, float* y, int64_t n, int64_t h, int64_t w, int64_t c, int64_t o) {
  static std::mutex running;
  std::lock_guard<std::mutex> lock(running);
  try {
    auto& engine = Engine();
    Plan& plan = PlanFor(part, n, h, w, c, o);
    const auto f32 = memory::data_type::f32;
    memory x_mem({{n, c, h, w}, f32, tag::nhwc}, engine, x);
    memory y_mem({{n, o, h, w}, f32, tag::nhwc}, engine, y);
    memory w_plain({{o, c, 3, 3}, f32, tag::hwio}, engine, kernel);
    memory w_mem = plan.reorder ? memory(plan.weights, engine) : w_plain;
    dnnl::stream stream(engine);
    if (part == kForward) {
      if (plan.reorder) plan.to_blocked.execute(stream, w_plain, w_mem);
      plan.conv.execute(stream, {{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DST, y_mem}});
    } else if (part == kInputGradient) {
      if (plan.reorder) plan.to_blocked.execute(stream, w_plain, w_mem);
      plan.conv.execute(stream, {{DNNL_ARG_DIFF_SRC, x_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DIFF_DST, y_mem}});
    } else {
      plan.conv.execute(stream, {{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_DIFF_WEIGHTS, w_mem}, {DNNL_ARG_DIFF_DST, y_mem}});
      if (plan.reorder) plan.to_plain.execute(stream, w_mem, w_plain);
    }
    stream.wait();
  } catch (const std::exception& e) {  // dnnl::error among them: XLA reports it, nothing escapes into XLA
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32, 4>;
using F32Out = ffi::ResultBuffer<ffi::F32, 4>;

ffi::Error Forward(F32 x, F32 kernel, F32Out y) {
  auto d = x.dimensions();
  return Run(kForward, x.typed_data(), kernel.typed_data(), y->typed_data(), d[0], d[1], d[2], d[3], kernel.dimensions()[3]);
}

ffi::Error InputGradient(F32 g, F32 kernel, F32Out dx) {
  auto d = dx->dimensions();
  return Run(kInputGradient, dx->typed_data(), kernel.typed_data(), g.typed_data(), d[0], d[1], d[2], d[3], kernel.dimensions()[3]);
}

ffi::Error WeightGradient(F32 x, F32 g, F32Out dw) {
  auto d = x.dimensions();
  return Run(kWeightGradient, x.typed_data(), dw->typed_data(), g.typed_data(), d[0], d[1], d[2], d[3], g.dimensions()[3]);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RjConvForward, Forward, ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(RjConvInputGradient, InputGradient, ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(RjConvWeightGradient, WeightGradient, ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>());
