// matting_runner: the `libtorch-cpp` runtime of matting-export-matrix.
//
// Loads one TorchScript artifact (BackgroundMattingV2, RobustVideoMatting: harness/exporters/torchscript.py) with
// torch::jit::load, sets its hoisted attributes with Module::setattr (backbone_scale, refine_mode,
// refine_sample_pixels, refine_threshold, refine_prevent_oversampling), then serves requests read
// from stdin, one per line, fields separated by TAB; every reply is one JSON line on stdout.
//
//   matting_runner --model M.pt [--threads N] [--ops-library LIB.so]... [--set NAME=VALUE]...
//     startup reply  {"ready": true, "load_ms": ..., "torch": "2.14.1", "threads": N, "ops_errors": [...],
//                     "attrs": {...}}
//                 or {"ready": false, "error": "...", "ops_errors": [...]} and exit code 3
//     --ops-library: a shared library registering custom operators (torchvision's C++ ops for
//     roi_align artifacts); one that fails to load is listed in ops_errors, fatal only if needed.
//   run <TAB> in1.npy [<TAB> in2.npy ...] <TAB> OUT_DIR
//     one inference on the inputs in forward()'s order (BGMv2: src, bgr; RVM: src, r1i..r4i,
//     downsample_ratio); writes OUT_DIR/out0.npy .. (BGMv2: pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm)
//     reply {"ok": true, "ms": ..., "outputs": N}
//   bench <TAB> in1.npy [<TAB> in2.npy ...] <TAB> end-to-end|compute <TAB> warmup_min_s <TAB> warmup_min_runs
//         <TAB> measure_min_s <TAB> measure_min_runs <TAB> measure_max_s
//     the harness's latency protocol (harness/benchmark.py), timed here with steady_clock;
//     reply {"ok": true, "clock": "steady_clock", "threads": N, "samples_ms": [...], "warmup_runs": ..., ...}
//     (threads: at::get_num_threads() of the timed calls)
//   threads <TAB> N
//     at::set_num_threads(N) for the following requests; reply {"ok": true, "threads": N}
//   quit
// A failing request replies {"ok": false, "error": "..."} and the server keeps going.
//
// Tensors travel as .npy files (little-endian, C order; float32, float16, float64, int64, int32,
// uint8, bool). "end-to-end" copies the host inputs into fresh tensors and each output into a fresh
// contiguous tensor around forward(); "compute" times forward() alone on tensors already in place.
// The process kills itself when its parent dies (PR_SET_PDEATHSIG), so a harness worker that is
// stopped for a timeout never leaves it running.

#include <ATen/Parallel.h>
#include <torch/script.h>

#include <dlfcn.h>
#include <sys/prctl.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif

namespace {

#if defined(TORCH_VERSION_MAJOR) && defined(TORCH_VERSION_MINOR) && defined(TORCH_VERSION_PATCH)
#define MR_STR2(x) #x
#define MR_STR(x) MR_STR2(x)
const char* const kTorchVersion = MR_STR(TORCH_VERSION_MAJOR) "." MR_STR(TORCH_VERSION_MINOR) "." MR_STR(TORCH_VERSION_PATCH);
#else
const char* const kTorchVersion = "unknown";
#endif

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}
double s_since(Clock::time_point t0) { return ms_since(t0) / 1000.0; }

std::string json_str(const std::string& s) {
  std::ostringstream o;
  o << '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': o << "\\\""; break;
      case '\\': o << "\\\\"; break;
      case '\n': o << "\\n"; break;
      case '\r': o << "\\r"; break;
      case '\t': o << "\\t"; break;
      default:
        if (c < 0x20) {
          o << "\\u" << std::hex << std::setw(4) << std::setfill('0') << int(c) << std::dec;
        } else {
          o << c;
        }
    }
  }
  o << '"';
  return o.str();
}

std::string num(double v) {
  std::ostringstream o;
  o << std::setprecision(9) << v;
  return o.str();
}

void reply(const std::string& line) {
  std::cout << line << std::endl;  // endl flushes: the harness waits for each line
}

std::string error_text(const std::exception& e) {
  if (auto* ce = dynamic_cast<const c10::Error*>(&e)) return ce->what_without_backtrace();
  return e.what();
}

// ------------------------------------------------------------------------------------------ npy
struct NpyType {
  const char* descr;
  c10::ScalarType type;
};
const NpyType kNpyTypes[] = {
    {"<f4", c10::ScalarType::Float}, {"<f2", c10::ScalarType::Half}, {"<f8", c10::ScalarType::Double},
    {"<i8", c10::ScalarType::Long},  {"<i4", c10::ScalarType::Int},  {"|u1", c10::ScalarType::Byte},
    {"|b1", c10::ScalarType::Bool},
};

std::string header_field(const std::string& header, const std::string& key, const std::string& path) {
  auto p = header.find("'" + key + "'");
  if (p == std::string::npos) throw std::runtime_error(path + ": npy header has no '" + key + "'");
  p = header.find(':', p);
  return header.substr(p + 1);
}

torch::Tensor read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  char magic[6];
  f.read(magic, 6);
  if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + " is not an .npy file");
  unsigned char ver[2];
  f.read(reinterpret_cast<char*>(ver), 2);
  uint32_t hlen = 0;
  if (ver[0] == 1) {
    unsigned char b[2];
    f.read(reinterpret_cast<char*>(b), 2);
    hlen = b[0] | (uint32_t(b[1]) << 8);
  } else {
    unsigned char b[4];
    f.read(reinterpret_cast<char*>(b), 4);
    hlen = b[0] | (uint32_t(b[1]) << 8) | (uint32_t(b[2]) << 16) | (uint32_t(b[3]) << 24);
  }
  std::string header(hlen, '\0');
  f.read(&header[0], hlen);
  if (!f) throw std::runtime_error(path + ": truncated npy header");

  std::string d = header_field(header, "descr", path);
  auto q1 = d.find('\''), q2 = d.find('\'', q1 + 1);
  std::string descr = d.substr(q1 + 1, q2 - q1 - 1);
  const NpyType* type = nullptr;
  for (const auto& t : kNpyTypes)
    if (descr == t.descr) type = &t;
  if (!type)
    throw std::runtime_error(path + ": npy dtype '" + descr + "' is not supported (<f4, <f2, <f8, <i8, <i4, |u1, |b1)");
  std::string fo = header_field(header, "fortran_order", path);
  if (fo.find("True") < fo.find(','))
    throw std::runtime_error(path + ": Fortran-ordered arrays are not supported (save a C-contiguous array)");
  std::string sh = header_field(header, "shape", path);
  auto a = sh.find('('), b = sh.find(')');
  std::vector<int64_t> shape;
  std::stringstream dims(sh.substr(a + 1, b - a - 1));
  for (std::string item; std::getline(dims, item, ',');) {
    if (item.find_first_not_of(" ") == std::string::npos) continue;
    shape.push_back(std::stoll(item));
  }
  auto t = torch::empty(shape, torch::TensorOptions().dtype(type->type));
  f.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  if (static_cast<size_t>(f.gcount()) != t.nbytes())
    throw std::runtime_error(path + ": truncated data (" + std::to_string(f.gcount()) + " of " +
                             std::to_string(t.nbytes()) + " bytes)");
  return t;
}

void write_npy(const std::string& path, const torch::Tensor& tensor) {
  torch::Tensor t = tensor.to(torch::kCPU).contiguous();
  const NpyType* type = nullptr;
  for (const auto& nt : kNpyTypes)
    if (nt.type == t.scalar_type()) type = &nt;
  if (!type) throw std::runtime_error(std::string("cannot write dtype ") + c10::toString(t.scalar_type()) + " to npy");
  std::ostringstream h;
  h << "{'descr': '" << type->descr << "', 'fortran_order': False, 'shape': (";
  for (int64_t i = 0; i < t.dim(); ++i) h << (i ? ", " : "") << t.size(i);
  if (t.dim() == 1) h << ",";
  h << "), }";
  std::string header = h.str();
  size_t unpadded = 10 + header.size() + 1;
  header += std::string((64 - unpadded % 64) % 64, ' ') + "\n";
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot write " + path);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char lenb[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  f.write("\x93NUMPY\x01\x00", 8);
  f.write(lenb, 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  if (!f) throw std::runtime_error("write failed: " + path + " (disk full?)");
}

// ------------------------------------------------------------------------------------------ model
std::string ivalue_text(const c10::IValue& v) {
  std::ostringstream o;
  if (v.isString()) return v.toStringRef();
  if (v.isDouble()) return num(v.toDouble());
  if (v.isBool()) return v.toBool() ? "true" : "false";
  if (v.isInt()) return std::to_string(v.toInt());
  o << v.type()->str();
  return o.str();
}

// Set a top-level attribute from text, converted to the attribute's own TorchScript type.
void set_attribute(torch::jit::Module& m, const std::string& name, const std::string& text) {
  if (!m.hasattr(name))
    throw std::runtime_error("the TorchScript module has no attribute '" + name +
                             "' (hoisted attributes: backbone_scale, refine_mode, refine_sample_pixels, "
                             "refine_threshold, refine_prevent_oversampling)");
  c10::IValue cur = m.attr(name);
  auto bad = [&](const std::string& want) {
    return std::runtime_error("cannot set " + name + " (" + want + ") from '" + text + "'");
  };
  size_t used = 0;
  try {
    if (cur.isDouble()) {
      double v = std::stod(text, &used);
      if (used != text.size()) throw bad("float");
      m.setattr(name, v);
    } else if (cur.isBool()) {
      if (text == "1" || text == "true" || text == "True") m.setattr(name, true);
      else if (text == "0" || text == "false" || text == "False") m.setattr(name, false);
      else throw bad("bool: true/false/1/0");
    } else if (cur.isInt()) {
      int64_t v = std::stoll(text, &used);
      if (used != text.size()) throw bad("int");
      m.setattr(name, v);
    } else if (cur.isString()) {
      m.setattr(name, text);
    } else {
      throw std::runtime_error("attribute '" + name + "' has type " + cur.type()->str() +
                               ", which cannot be set from the command line");
    }
  } catch (const std::invalid_argument&) {
    throw bad(cur.type()->str());
  } catch (const std::out_of_range&) {
    throw bad(cur.type()->str() + " in range");
  }
}

std::vector<torch::Tensor> forward(torch::jit::Module& m, const std::vector<torch::Tensor>& ins) {
  c10::InferenceMode guard;
  std::vector<c10::IValue> args(ins.begin(), ins.end());
  c10::IValue out = m.forward(args);
  std::vector<torch::Tensor> outs;
  if (out.isTuple()) {
    for (const auto& e : out.toTupleRef().elements()) outs.push_back(e.toTensor());
  } else if (out.isTensorList()) {
    for (const auto& t : out.toTensorVector()) outs.push_back(t);
  } else {
    outs.push_back(out.toTensor());
  }
  return outs;
}

// One end-to-end call: host inputs copied into fresh tensors, outputs copied out contiguously.
void end_to_end(torch::jit::Module& m, const std::vector<torch::Tensor>& ins) {
  std::vector<torch::Tensor> fresh;
  for (const auto& t : ins) fresh.push_back(t.clone());
  auto outs = forward(m, fresh);
  for (auto& o : outs) {
    auto host = o.contiguous().clone();
    (void)host;
  }
}

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> parts;
  std::stringstream ss(line);
  for (std::string item; std::getline(ss, item, '\t');) parts.push_back(item);
  return parts;
}

std::string do_run(torch::jit::Module& m, const std::vector<std::string>& f) {
  if (f.size() < 3) throw std::runtime_error("run expects: run<TAB>in1.npy[<TAB>in2.npy...]<TAB>OUT_DIR");
  std::vector<torch::Tensor> ins;
  for (size_t i = 1; i + 1 < f.size(); ++i) ins.push_back(read_npy(f[i]));
  auto t0 = Clock::now();
  auto outs = forward(m, ins);
  double ms = ms_since(t0);
  for (size_t i = 0; i < outs.size(); ++i) write_npy(f.back() + "/out" + std::to_string(i) + ".npy", outs[i]);
  return "{\"ok\": true, \"ms\": " + num(ms) + ", \"outputs\": " + std::to_string(outs.size()) + "}";
}

std::string do_bench(torch::jit::Module& m, const std::vector<std::string>& f) {
  if (f.size() < 8)
    throw std::runtime_error(
        "bench expects: bench, in1.npy[, in2.npy...], end-to-end|compute, warmup_min_s, warmup_min_runs, "
        "measure_min_s, measure_min_runs, measure_max_s (TAB-separated)");
  const size_t n = f.size();
  std::vector<torch::Tensor> ins;
  for (size_t i = 1; i + 6 < n; ++i) ins.push_back(read_npy(f[i]));
  const std::string& what = f[n - 6];
  if (what != "end-to-end" && what != "compute")
    throw std::runtime_error("bench latency definition '" + what + "'; expected end-to-end or compute");
  const double warm_s = std::stod(f[n - 5]), meas_min_s = std::stod(f[n - 3]), meas_max_s = std::stod(f[n - 1]);
  const long warm_runs = std::stol(f[n - 4]), meas_runs = std::stol(f[n - 2]);
  auto call = [&] {
    if (what == "compute") forward(m, ins);
    else end_to_end(m, ins);
  };
  auto t0 = Clock::now();
  long n_warm = 0;
  while (n_warm < warm_runs || s_since(t0) < warm_s) {
    call();
    ++n_warm;
  }
  double warmup_s = s_since(t0);
  std::vector<double> samples;
  t0 = Clock::now();
  while ((static_cast<long>(samples.size()) < meas_runs || s_since(t0) < meas_min_s) && s_since(t0) < meas_max_s) {
    auto t = Clock::now();
    call();
    samples.push_back(ms_since(t));
  }
  double measure_s = s_since(t0);
  std::ostringstream o;
  o << "{\"ok\": true, \"clock\": \"steady_clock\", \"threads\": " << at::get_num_threads()
    << ", \"warmup_runs\": " << n_warm << ", \"warmup_s\": " << num(warmup_s)
    << ", \"measure_s\": " << num(measure_s) << ", \"samples_ms\": [";
  for (size_t i = 0; i < samples.size(); ++i) o << (i ? ", " : "") << num(samples[i]);
  o << "]}";
  return o.str();
}

int usage(const std::string& why) {
  std::cerr << "matting_runner: " << why << "\n"
            << "usage: matting_runner --model M.pt [--threads N] [--ops-library LIB.so]... [--set NAME=VALUE]...\n"
            << "       matting_runner --version\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  std::string model;
  int threads = 0;
  std::vector<std::string> libraries;
  std::vector<std::pair<std::string, std::string>> sets;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--version") {
        reply("{\"torch\": " + json_str(kTorchVersion) + "}");
        return 0;
      } else if (a == "--model") {
        model = value();
      } else if (a == "--threads") {
        threads = std::stoi(value());
      } else if (a == "--ops-library") {
        libraries.push_back(value());
      } else if (a == "--set") {
        std::string kv = value();
        auto eq = kv.find('=');
        if (eq == std::string::npos) return usage("--set expects NAME=VALUE, got '" + kv + "'");
        sets.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
      } else {
        return usage("unknown argument '" + a + "'");
      }
    } catch (const std::exception& e) {
      return usage(e.what());
    }
  }
  if (model.empty()) return usage("--model is required");

  // Custom operators (torchvision::roi_align) are registered when their library is loaded. A library
  // that does not load is only fatal for a model that needs its operators: the errors are reported.
  std::vector<std::string> ops_errors;
  for (const auto& lib : libraries) {
    if (!dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
      const char* err = dlerror();
      ops_errors.push_back(lib + ": " + (err ? err : "?"));
    }
  }
  auto ops_json = [&] {
    std::string o = "[";
    for (size_t i = 0; i < ops_errors.size(); ++i) o += (i ? ", " : "") + json_str(ops_errors[i]);
    return o + "]";
  };
  if (threads > 0) at::set_num_threads(threads);

  torch::jit::Module m;
  auto t0 = Clock::now();
  try {
    m = torch::jit::load(model, torch::kCPU);
    m.eval();
    for (const auto& kv : sets) set_attribute(m, kv.first, kv.second);
  } catch (const std::exception& e) {
    reply("{\"ready\": false, \"error\": " + json_str(error_text(e)) + ", \"ops_errors\": " + ops_json() + "}");
    return 3;
  }
  double load_ms = ms_since(t0);
  std::ostringstream ready;
  ready << "{\"ready\": true, \"load_ms\": " << num(load_ms) << ", \"torch\": " << json_str(kTorchVersion)
        << ", \"threads\": " << at::get_num_threads() << ", \"ops_errors\": " << ops_json() << ", \"attrs\": {";
  for (size_t i = 0; i < sets.size(); ++i)
    ready << (i ? ", " : "") << json_str(sets[i].first) << ": " << json_str(ivalue_text(m.attr(sets[i].first)));
  ready << "}}";
  reply(ready.str());

  for (std::string line; std::getline(std::cin, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto f = split_tabs(line);
    if (f.empty()) continue;
    try {
      if (f[0] == "quit") break;
      if (f[0] == "run") reply(do_run(m, f));
      else if (f[0] == "threads" && f.size() == 2) {
        at::set_num_threads(std::stoi(f[1]));
        reply("{\"ok\": true, \"threads\": " + std::to_string(at::get_num_threads()) + "}");
      }
      else if (f[0] == "bench") reply(do_bench(m, f));
      else throw std::runtime_error("unknown request '" + f[0] + "'; expected run, bench, threads or quit");
    } catch (const std::exception& e) {
      reply("{\"ok\": false, \"error\": " + json_str(error_text(e)) + "}");
    }
  }
  return 0;
}
