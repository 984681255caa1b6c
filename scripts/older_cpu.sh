#!/usr/bin/env bash
# Usage: scripts/older_cpu.sh PYTHON
# Print the environment that makes PyTorch, MKL and oneDNN compute as on an older x86-64 CPU than
# this one: one instruction-set step down (AVX-512 -> AVX2, AVX2 -> SSE4). They then pick other
# kernels, which add the same numbers in another order, so floating-point results change in their
# last bits exactly as they do on another machine. `make test-older-cpu` runs the suite this way.
# (OMP_NUM_THREADS=1 does not change the bits, so it is no substitute.) PYTHON's torch is asked
# which kernels it uses with and without the step down; if they are the same, this fails, so a
# pass that would only repeat the first one can never look like a second machine.
set -euo pipefail
python=${1:?usage: scripts/older_cpu.sh PYTHON}
flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
if [[ "$flags" == *" avx512f "* ]]; then
  older="ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2"
elif [[ "$flags" == *" avx2 "* ]]; then
  older="ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41"
else
  echo "scripts/older_cpu.sh: this CPU has neither AVX-512 nor AVX2 (or /proc/cpuinfo is missing):" \
       "no older x86-64 instruction set to imitate; run 'make test' on an x86-64 Linux machine instead" >&2
  exit 1
fi
kernels='import torch; print(torch.backends.cpu.get_cpu_capability())'
native=$("$python" -c "$kernels")
imitated=$(env $older "$python" -c "$kernels")
if [ "$native" = "$imitated" ]; then
  echo "scripts/older_cpu.sh: $older left PyTorch's kernels at $native: nothing would differ from this CPU" >&2
  exit 1
fi
echo "peftlab: as on an older CPU, PyTorch kernels $native -> $imitated" >&2
echo "$older"
