"""The processor's name in the benchmark's report: model, vector instruction sets, logical CPUs."""

import os

from fracture.benchmarking.machine import processor_name

CPUINFO = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma {extra}

processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma {extra}
"""


def test_an_avx2_processor_is_told_from_an_avx512_one():
    assert processor_name(CPUINFO.format(extra="")) == f"AMD EPYC (AVX2), {os.cpu_count()} logical CPUs"
    with_bf16 = CPUINFO.format(extra="avx512f avx512_bf16")
    assert processor_name(with_bf16) == f"AMD EPYC (AVX2, AVX-512, AVX512_BF16), {os.cpu_count()} logical CPUs"


def test_a_processor_without_avx2_says_so():
    assert processor_name("model name\t: Old CPU\nflags\t\t: fpu sse2\n").startswith("Old CPU (no AVX2), ")
