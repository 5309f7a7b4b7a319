"""--weights auto's decision: which files miss the fast kernels on which CPU, and what they become."""

from collections import Counter

import pytest

from slmserve.models.weights import auto_target, cpu_family, head_type

X86 = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | LLAMAFILE = 1 | REPACK = 1 |"
ARM = "CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | DOTPROD = 1 | LLAMAFILE = 1 | REPACK = 1 |"
OLD_X86 = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 0 | F16C = 1 | LLAMAFILE = 1 |"


def test_cpu_family_reads_llama_cpps_system_info():
    assert cpu_family(X86) == "AVX2"
    assert cpu_family(ARM) == "NEON"
    assert cpu_family(OLD_X86) is None  # AVX2 = 0 is not AVX2


# SmolLM2's bundled file: Q4_1 matrices, Q8_0 token embeddings (tied to the output), F32 norms.
BUNDLED = Counter({"q4_1": 106_168_320, "q8_0": 28_311_552, "f32": 35_136})


@pytest.mark.parametrize(
    ("types", "family", "target"),
    [
        (BUNDLED, "AVX2", "q4_0"),  # the measured case: Q4_1 misses sgemm and the repack
        (BUNDLED, "NEON", "q4_0"),
        (BUNDLED, None, None),  # no fast kernels known: nothing to gain, keep the file
        (Counter({"q4_0": 100, "q8_0": 30, "f32": 1}), "AVX2", None),  # already fast
        (Counter({"q4_K": 100, "f32": 1}), "AVX2", None),  # Q4_K is repacked on AVX2
        (Counter({"q4_K": 100, "f32": 1}), "NEON", "q4_0"),
        (Counter({"q6_K": 100, "f32": 1}), "AVX2", "q8_0"),  # a finer source keeps more bits
        (Counter({"q5_1": 100}), "AVX2", "q8_0"),
        (Counter({"f16": 100, "f32": 1}), "AVX2", None),
        (Counter({"q2_K": 100, "q6_K": 10}), "AVX2", "q4_0"),
        (Counter(), "AVX2", None),
    ],
)
def test_auto_target(types, family, target):
    got, reason = auto_target(types, family)
    assert got == target
    assert reason


def test_auto_reason_names_the_share_and_type():
    assert auto_target(BUNDLED, "AVX2")[1] == "79% of the weights (q4_1) miss AVX2's fast kernels"


@pytest.mark.parametrize(
    ("target", "family", "head"),
    [
        ("q4_0", "AVX2", "q5_0"),  # fewer bytes than Q8_0 for the largest matrix, still on the fast kernels
        ("q4_0", "NEON", "q8_0"),  # NEON's sgemm skips Q5_0
        ("q4_0", None, "q8_0"),
        ("iq4_nl", "AVX2", "q8_0"),  # the layout for closeness keeps the finer head
        ("q8_0", "AVX2", "q8_0"),
        ("f16", "AVX2", "f16"),
    ],
)
def test_head_type(target, family, head):
    assert head_type(target, family) == head
