// Build tool of the CUDA emulator: copies a .cu file, turning each kernel launch
//   kernel<targs><<<grid, block, shared, stream>>>(args)
// into
//   ::glam_emu::launch(grid, block, shared, stream, [&] { kernel<targs>(args); })
// so that a host compiler can build it (emulator.h), and each dynamic shared array
//   extern __shared__ type name[];
// into a pointer to the launch's dynamic shared memory. Everything else, newlines included, is kept,
// and a #line directive names the original file: compiler messages point at the .cu source.
//
// usage: launch_rewrite IN.cu OUT.cpp
#include <cctype>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace {

bool name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':'; }

// Where the kernel expression that ends just before `end` starts: an identifier (with ::), and the
// template arguments after it, balanced.
size_t kernel_start(const std::string& s, size_t end) {
  size_t i = end;
  while (i > 0 && std::isspace(static_cast<unsigned char>(s[i - 1]))) --i;
  if (i > 0 && s[i - 1] == '>') {
    int depth = 0;
    do {
      --i;
      if (s[i] == '>') ++depth;
      else if (s[i] == '<') --depth;
    } while (i > 0 && depth > 0);
  }
  while (i > 0 && name_char(s[i - 1])) --i;
  return i;
}

// The index of the parenthesis that closes the one at `open`.
size_t closing_paren(const std::string& s, size_t open) {
  int depth = 0;
  for (size_t i = open; i < s.size(); ++i) {
    if (s[i] == '(') ++depth;
    else if (s[i] == ')' && --depth == 0) return i;
  }
  throw std::runtime_error("unbalanced parentheses after a kernel launch");
}

size_t line_of(const std::string& s, size_t at) {
  size_t n = 1;
  for (size_t i = 0; i < at; ++i) n += s[i] == '\n';
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: launch_rewrite IN.cu OUT.cpp\n";
    return 2;
  }
  std::ifstream in(argv[1]);
  if (!in) {
    std::cerr << "launch_rewrite: cannot read " << argv[1] << "\n";
    return 2;
  }
  std::stringstream text;
  text << in.rdbuf();
  const std::string s = text.str();
  std::string out = "#line 1 \"" + std::string(argv[1]) + "\"\n";
  size_t copied = 0;
  try {
    for (size_t at = s.find("<<<"); at != std::string::npos; at = s.find("<<<", copied)) {
      const size_t start = kernel_start(s, at);
      const size_t config_end = s.find(">>>", at);
      if (start == at || config_end == std::string::npos)
        throw std::runtime_error("a launch without a kernel name or >>> at line " + std::to_string(line_of(s, at)));
      size_t open = config_end + 3;
      while (open < s.size() && std::isspace(static_cast<unsigned char>(s[open]))) ++open;
      if (open >= s.size() || s[open] != '(')
        throw std::runtime_error("a launch without arguments at line " + std::to_string(line_of(s, at)));
      const size_t close = closing_paren(s, open);
      out += s.substr(copied, start - copied);
      out += "::glam_emu::launch(" + s.substr(at + 3, config_end - at - 3) + ", [&] { " + s.substr(start, at - start) +
             s.substr(open, close + 1 - open) + "; })";
      copied = close + 1;
    }
  } catch (const std::exception& e) {
    std::cerr << "launch_rewrite: " << argv[1] << ": " << e.what() << "\n";
    return 1;
  }
  out += s.substr(copied);
  // extern __shared__ T name[];  ->  T* const name = static_cast<T*>(::glam_emu::dynamic_shared());
  const std::string marker = "extern __shared__";
  for (size_t at = out.find(marker); at != std::string::npos; at = out.find(marker, at + 1)) {
    const size_t end = out.find(';', at);
    const size_t open = out.find('[', at);
    if (end == std::string::npos || open == std::string::npos || open > end) {
      std::cerr << "launch_rewrite: " << argv[1] << ": an extern __shared__ declaration that is not an array\n";
      return 1;
    }
    size_t name_begin = open;
    while (name_begin > at && std::isspace(static_cast<unsigned char>(out[name_begin - 1]))) --name_begin;
    size_t name_end = name_begin;
    while (name_begin > at && name_char(out[name_begin - 1])) --name_begin;
    const std::string type = out.substr(at + marker.size(), name_begin - at - marker.size());
    const std::string name = out.substr(name_begin, name_end - name_begin);
    out.replace(at, end - at, type + "* const " + name + " = static_cast<" + type + "*>(::glam_emu::dynamic_shared())");
  }
  std::ofstream o(argv[2]);
  o << out;
  if (!o) {
    std::cerr << "launch_rewrite: cannot write " << argv[2] << "\n";
    return 1;
  }
  return 0;
}
